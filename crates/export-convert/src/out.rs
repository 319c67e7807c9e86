//! The output buffer of the CSV reader: a `Vec` written by index, so a short run of bytes can be
//! stored as one eight-byte word and the length advanced by the run's length. Short copies then
//! cost one store instead of a `memcpy` call (inside a Wasm sandbox, a call out of the module).

/// Output under construction.
#[derive(Debug, Default)]
pub(crate) struct Out {
    buffer: Vec<u8>,
    len: usize,
}

impl Out {
    /// Room for `capacity` bytes before the buffer grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buffer: vec![0; capacity.max(64)],
            len: 0,
        }
    }

    /// Makes room for `more` bytes past the end.
    #[inline(always)]
    fn room(&mut self, more: usize) {
        if self.len + more > self.buffer.len() {
            let grown = (self.buffer.len() * 2).max(self.len + more);
            self.buffer.resize(grown, 0);
        }
    }

    /// Appends one byte.
    #[inline(always)]
    pub(crate) fn push(&mut self, byte: u8) {
        self.room(1);
        self.buffer[self.len] = byte;
        self.len += 1;
    }

    /// Appends bytes.
    #[inline(always)]
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.room(bytes.len());
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends the first `take` (at most 8) bytes of `word` (little-endian).
    #[inline(always)]
    pub(crate) fn word(&mut self, word: u64, take: usize) {
        self.room(8);
        self.buffer[self.len..self.len + 8].copy_from_slice(&word.to_le_bytes());
        self.len += take;
    }

    /// Appends the first `len` bytes of `words` (little-endian, as [`to_words`] made them).
    #[inline(always)]
    pub(crate) fn words(&mut self, words: &[u64], len: usize) {
        self.room(words.len() * 8);
        for (index, word) in words.iter().enumerate() {
            let at = self.len + index * 8;
            self.buffer[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        self.len += len;
    }

    /// Appends the first `len` (at most 16) bytes of two words.
    #[inline(always)]
    pub(crate) fn two_words(&mut self, words: [u64; 2], len: usize) {
        self.room(16);
        self.buffer[self.len..self.len + 8].copy_from_slice(&words[0].to_le_bytes());
        self.buffer[self.len + 8..self.len + 16].copy_from_slice(&words[1].to_le_bytes());
        self.len += len;
    }

    /// Forgets everything written after the first `len` bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The output.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.buffer.truncate(self.len);
        self.buffer
    }
}

/// `bytes` as little-endian words (the last one zero-padded), for [`Out::words`].
pub(crate) fn to_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_partial_words_append_exactly_their_bytes() {
        let mut out = Out::with_capacity(0);
        out.push(b'[');
        out.word(u64::from_le_bytes(*b"abcdefgh"), 3);
        let key = b",\"a key longer than eight\":\"";
        out.words(&to_words(key), key.len());
        out.extend_from_slice(b"xyz");
        for _ in 0..100 {
            out.word(u64::from_le_bytes(*b"12345678"), 8);
        }
        let mut expected = b"[abc".to_vec();
        expected.extend_from_slice(key);
        expected.extend_from_slice(b"xyz");
        expected.extend_from_slice(&b"12345678".repeat(100));
        assert_eq!(out.len(), expected.len());
        assert_eq!(out.into_vec(), expected);
    }
}
