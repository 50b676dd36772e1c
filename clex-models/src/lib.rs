//! clex-models: LLaMA and GPT-NeoX on any burn backend (built in the clex-models issue;
//! this crate is an empty placeholder until then).
