//! [`TextStream`]: text of a token stream as it grows, for printing or sending a reply token
//! by token.

use tokenizers::Tokenizer;

use crate::error::ModelError;

/// Turns generated token ids into text pieces. Decoding one token alone is wrong for most
/// tokenizers (SentencePiece drops a leading space at the start of a decode, byte-level BPE
/// splits characters across tokens), so each piece is the difference between decoding a
/// short window of recent tokens with and without the new ones; text ending in an
/// incomplete character is held back until it completes.
#[derive(Debug)]
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix: usize,
    /// End of the text already returned.
    read: usize,
}

impl<'t> TextStream<'t> {
    /// An empty stream decoding with `tokenizer` (special tokens skipped).
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        TextStream { tokenizer, ids: Vec::new(), prefix: 0, read: 0 }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer.decode(ids, true).map_err(|e| ModelError::Invalid(format!("decoding tokens: {e}")))
    }

    /// Adds `id` and returns the text it completes (often empty mid-character).
    pub fn push(&mut self, id: u32) -> Result<String, ModelError> {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let after = self.decode(&self.ids[self.prefix..])?;
        if after.len() > before.len()
            && !after.ends_with('\u{FFFD}')
            && let Some(new) = after.get(before.len()..)
        {
            let new = new.to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(new);
        }
        Ok(String::new())
    }

    /// The text held back (an incomplete character at the end), once no token follows.
    pub fn finish(&mut self) -> Result<String, ModelError> {
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let after = self.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(after.get(before.len()..).unwrap_or("").to_string())
    }

    /// Every token pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
