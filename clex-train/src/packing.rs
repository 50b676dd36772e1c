//! Packing documents into fixed-length training sequences, as the reference does: each
//! document is preceded by its BOS, documents are concatenated, and the stream is cut into
//! windows of `seq_len + 1` tokens (inputs and next-token targets overlap by one); the
//! remainder is dropped.

/// Windows of `seq_len + 1` tokens from BOS-separated documents.
pub fn pack(docs: &[Vec<u32>], bos: Option<u32>, seq_len: usize) -> Vec<Vec<u32>> {
    let window = seq_len + 1;
    let mut stream = Vec::with_capacity(docs.iter().map(|d| d.len() + 1).sum());
    for d in docs {
        if let Some(b) = bos {
            stream.push(b);
        }
        stream.extend_from_slice(d);
    }
    stream.chunks_exact(window).map(<[u32]>::to_vec).collect()
}
