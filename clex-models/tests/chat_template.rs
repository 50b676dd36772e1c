//! Chat templates against transformers: every case of tests/data/chat_templates.json
//! (rendered by transformers' `apply_chat_template(..., tokenize=False)`, see
//! scripts/goldens/chat_templates.py) rendered by [`ChatTemplate`] must give the same string,
//! byte for byte, or, where transformers raised `raise_exception`, an error carrying its
//! message. Then where templates come from: an HF directory (none, a string, a named list,
//! `chat_template.jinja`, broken ones), a `--chat-template` file, and SmolLM2's GGUF and its
//! converted directory when fetched (`CLEX_REQUIRE_SMOLLM2=1` makes their absence a failure).

mod gguf_files;

use std::path::{Path, PathBuf};

use clex_models::{ChatMessage, ChatTemplate, ModelSource};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Goldens {
    templates: std::collections::BTreeMap<String, TemplateSpec>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct TemplateSpec {
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    expected: Option<String>,
    error: Option<String>,
}

fn goldens() -> Goldens {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat_templates.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn compile(name: &str, spec: &TemplateSpec) -> ChatTemplate {
    ChatTemplate::new(&spec.source, &format!("golden template `{name}`"), spec.bos_token.clone(), spec.eos_token.clone()).unwrap()
}

/// Renders every golden case of `template` with `chat`; returns how many were compared.
fn check_cases(goldens: &Goldens, template: &str, chat: &ChatTemplate) -> usize {
    let mut n = 0;
    for case in goldens.cases.iter().filter(|c| c.template == template) {
        let got = chat.render(&case.messages, case.add_generation_prompt);
        match (&case.expected, &case.error) {
            (Some(want), None) => assert_eq!(got.as_ref().unwrap_or_else(|e| panic!("{}: {e}", case.name)), want, "{}", case.name),
            (None, Some(message)) => {
                let e = got.expect_err(&case.name).to_string();
                assert!(e.contains(message), "{}: {e} should carry transformers' message {message:?}", case.name);
                assert!(e.contains(chat.origin()), "{}: {e} should name {}", case.name, chat.origin());
                assert!(e.contains("raise_exception"), "{}: {e}", case.name);
            }
            _ => panic!("{}: a case has an expected string or an error", case.name),
        }
        n += 1;
    }
    n
}

#[test]
fn every_golden_case_renders_as_transformers() {
    let goldens = goldens();
    let mut n = 0;
    for (name, spec) in &goldens.templates {
        n += check_cases(&goldens, name, &compile(name, spec));
    }
    assert_eq!(n, goldens.cases.len());
    // Both kinds of case are there: the file is not just errors or just strings.
    assert!(goldens.cases.iter().filter(|c| c.error.is_some()).count() >= 2);
    assert!(goldens.templates.contains_key("smollm2") && goldens.templates.contains_key("llama2"));
}

#[test]
fn a_template_is_shared_across_threads() {
    // A server renders one model's template from every request's task.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ChatTemplate>();
    let t = ChatTemplate::new("{{ [1, 2.5, none, true, 'it\\'s'] }} {{ [1, 2.5, {'a': none}] | tojson }}", "inline", None, None).unwrap();
    // jinja2 prints Python's repr; json.dumps writes JSON.
    assert_eq!(t.render(&[], false).unwrap(), "[1, 2.5, None, True, \"it's\"] [1, 2.5, {\"a\": null}]");
}

#[test]
fn a_template_without_bos_leaves_it_undefined() {
    // transformers passes no bos_token for a tokenizer without one: printing it gives "",
    // concatenating it fails; `is defined` says which.
    let t = ChatTemplate::new("{{ bos_token }}|{{ bos_token is defined }}|{{ eos_token }}", "inline", None, Some("</s>".into())).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "|False|</s>");
}

#[test]
fn a_syntax_error_fails_at_construction_naming_the_origin() {
    let e = ChatTemplate::new("{% for m in messages %}{{ m.content }}", "some/file.jinja", None, None).unwrap_err().to_string();
    assert!(e.starts_with("some/file.jinja: invalid chat template"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    // An unknown filter fails when rendered (jinja2 finds it at compile time), naming the origin.
    let e =
        ChatTemplate::new("{{ messages | no_such_filter }}", "x.jinja", None, None).unwrap().render(&[], false).unwrap_err().to_string();
    assert!(e.starts_with("x.jinja: rendering the chat template") && e.contains("no_such_filter"), "{e}");
}

/// A model directory with a tiny LLaMA config and `files` ([(name, text)]).
fn model_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama_default.json");
    std::fs::copy(config, dir.path().join("config.json")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn template_of(dir: &Path) -> Result<Option<ChatTemplate>, String> {
    ModelSource::open(dir).unwrap().chat_template().map_err(|e| e.to_string())
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

#[test]
fn a_directory_without_a_template_has_none() {
    let bare = model_dir(&[]);
    assert!(template_of(bare.path()).unwrap().is_none());
    let no_key = model_dir(&[("tokenizer_config.json", json!({"bos_token": "<s>"}).to_string())]);
    assert!(template_of(no_key.path()).unwrap().is_none());
    let null = model_dir(&[("tokenizer_config.json", json!({"chat_template": null}).to_string())]);
    assert!(template_of(null.path()).unwrap().is_none());
}

#[test]
fn directory_templates_and_their_special_tokens() {
    // A string, with bos/eos as strings and as {"content": ...} objects.
    let config = json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token }}",
    });
    let dir = model_dir(&[("tokenizer_config.json", config.to_string())]);
    let t = template_of(dir.path()).unwrap().unwrap();
    assert_eq!(t.render(&user("hi"), false).unwrap(), "<s>[user]hi</s>");
    assert!(t.origin().ends_with("tokenizer_config.json (chat_template)"), "{}", t.origin());

    // A named list: "default" is taken.
    let list = json!({"eos_token": "E", "chat_template": [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "default{{ eos_token }}"},
    ]});
    let dir = model_dir(&[("tokenizer_config.json", list.to_string())]);
    assert_eq!(template_of(dir.path()).unwrap().unwrap().render(&user("x"), false).unwrap(), "defaultE");

    // chat_template.jinja wins over tokenizer_config.json, as in transformers; the tokens
    // still come from the config, or from special_tokens_map.json.
    let dir = model_dir(&[
        ("tokenizer_config.json", json!({"chat_template": "from the config"}).to_string()),
        ("special_tokens_map.json", json!({"bos_token": "B", "eos_token": {"content": "E"}}).to_string()),
        ("chat_template.jinja", "{{ bos_token }}from the file{{ eos_token }}\n".into()),
    ]);
    let t = template_of(dir.path()).unwrap().unwrap();
    // jinja2 drops a single trailing newline of a template.
    assert_eq!(t.render(&user("x"), false).unwrap(), "Bfrom the fileE");
    assert!(t.origin().ends_with("chat_template.jinja"), "{}", t.origin());
}

#[test]
fn broken_directory_templates_name_the_file_and_key() {
    let list = json!({"chat_template": [{"name": "tool_use", "template": "x"}]});
    let e = template_of(model_dir(&[("tokenizer_config.json", list.to_string())]).path()).unwrap_err();
    assert!(e.contains("tokenizer_config.json (chat_template)") && e.contains("\"default\"") && e.contains("tool_use"), "{e}");
    let number = json!({"chat_template": 3});
    let e = template_of(model_dir(&[("tokenizer_config.json", number.to_string())]).path()).unwrap_err();
    assert!(e.contains("tokenizer_config.json (chat_template)") && e.contains("a number"), "{e}");
    let syntax = json!({"chat_template": "{% if %}"});
    let e = template_of(model_dir(&[("tokenizer_config.json", syntax.to_string())]).path()).unwrap_err();
    assert!(e.contains("tokenizer_config.json (chat_template): invalid chat template"), "{e}");
    let e = template_of(model_dir(&[("tokenizer_config.json", "{not json".into())]).path()).unwrap_err();
    assert!(e.contains("tokenizer_config.json: invalid JSON"), "{e}");
}

#[test]
fn a_template_file_renders_with_the_models_tokens() {
    let dir = model_dir(&[("tokenizer_config.json", json!({"bos_token": "<s>", "eos_token": "</s>"}).to_string())]);
    let file = dir.path().join("mine.jinja");
    std::fs::write(&file, "{{ bos_token }}{% for m in messages %}{{ m.content | upper }}{% endfor %}{{ eos_token }}").unwrap();
    let source = ModelSource::open(dir.path()).unwrap();
    let t = source.chat_template_file(&file).unwrap();
    assert_eq!(t.render(&user("hi"), false).unwrap(), "<s>HI</s>");
    assert_eq!(t.origin(), file.display().to_string());
    let missing = source.chat_template_file(&dir.path().join("missing.jinja")).unwrap_err().to_string();
    assert!(missing.contains("missing.jinja"), "{missing}");
}

#[test]
fn tojson_and_strftime_now_follow_transformers() {
    let messages = vec![ChatMessage::new("user", "a\"b\n日本")];
    let t = ChatTemplate::new("{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}", "inline", None, None).unwrap();
    // json.dumps(..., ensure_ascii=False) and json.dumps(..., ensure_ascii=False, indent=2).
    assert_eq!(
        t.render(&messages, false).unwrap(),
        "[{\"role\": \"user\", \"content\": \"a\\\"b\\n日本\"}]|{\n  \"role\": \"user\",\n  \"content\": \"a\\\"b\\n日本\"\n}"
    );
    let t = ChatTemplate::new("{{ messages[0] | tojson(ensure_ascii=true, sort_keys=true, separators=[',', ':']) }}", "inline", None, None)
        .unwrap();
    assert_eq!(t.render(&messages, false).unwrap(), "{\"content\":\"a\\\"b\\n\\u65e5\\u672c\",\"role\":\"user\"}");
    // A date is today's (UTC): its year is this century's and it has the asked-for shape.
    let t = ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}", "inline", None, None).unwrap();
    let date = t.render(&[], false).unwrap();
    assert!(date.len() == 10 && date.starts_with("20") && date.as_bytes()[4] == b'-', "{date}");
}

/// SmolLM2's own template, from the GGUF and from the directory xtask converts it to: the
/// tokens and every smollm2 golden case.
#[test]
fn smollm2_gguf_and_directory_templates_render_as_transformers() {
    let Some(gguf) = gguf_files::smollm2() else { return };
    let goldens = goldens();
    let spec = &goldens.templates["smollm2"];
    let from_gguf = ModelSource::open(&gguf).unwrap().chat_template().unwrap().expect("SmolLM2's GGUF has tokenizer.chat_template");
    assert_eq!(from_gguf.bos_token(), spec.bos_token.as_deref());
    assert_eq!(from_gguf.eos_token(), spec.eos_token.as_deref());
    assert!(from_gguf.origin().ends_with("(tokenizer.chat_template)"), "{}", from_gguf.origin());
    assert!(check_cases(&goldens, "smollm2", &from_gguf) >= 12);
    let hf = gguf.parent().unwrap().join("hf");
    if hf.join("tokenizer_config.json").is_file() {
        let from_dir = ModelSource::open(&hf).unwrap().chat_template().unwrap().expect("the converted directory keeps the template");
        assert_eq!((from_dir.bos_token(), from_dir.eos_token()), (from_gguf.bos_token(), from_gguf.eos_token()));
        check_cases(&goldens, "smollm2", &from_dir);
    }
}
