//! [`StopStrings`]: cutting generated text at the first of a request's stop sequences,
//! without sending any text that may turn out to begin one.

/// Text held back until it cannot be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
}

/// What [`StopStrings::push`] lets through.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text safe to send.
    pub text: String,
    /// A stop sequence was found; `text` ends where it began.
    pub stopped: bool,
}

impl StopStrings {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds generated text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Released {
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Released { text, stopped: true };
        }
        // Keep the longest tail that is a proper prefix of some stop sequence (only tails
        // shorter than the longest stop can be).
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| self.held.len() - i < longest)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let text = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        Released { text, stopped: false }
    }

    /// Everything held back, once generation ended without a stop sequence.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::{Released, StopStrings};

    fn stops(s: &[&str]) -> StopStrings {
        StopStrings::new(s.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn text_is_cut_at_the_first_stop_across_pieces() {
        let mut m = stops(&["\n\n", "END"]);
        assert_eq!(m.push("Hello E"), Released { text: "Hello ".into(), stopped: false });
        assert_eq!(m.push("ND"), Released { text: "".into(), stopped: true });
        let mut m = stops(&["END"]);
        assert_eq!(m.push("a EN"), Released { text: "a ".into(), stopped: false });
        assert_eq!(m.push("Dless"), Released { text: "".into(), stopped: true });
        let mut m = stops(&["xyz"]);
        assert_eq!(m.push("x"), Released { text: "".into(), stopped: false });
        assert_eq!(m.push("a"), Released { text: "xa".into(), stopped: false });
        assert_eq!(m.push("éx"), Released { text: "é".into(), stopped: false });
        assert_eq!(m.finish(), "x");
        let mut m = stops(&[]);
        assert_eq!(m.push("all of it"), Released { text: "all of it".into(), stopped: false });
    }

    #[test]
    fn the_earliest_stop_wins() {
        let mut m = stops(&["cd", "b"]);
        assert_eq!(m.push("abcd"), Released { text: "a".into(), stopped: true });
    }
}
