//! The output buffers of the CSV reader, written by index, so a short run of bytes can be stored
//! as one eight-byte word and the length advanced by the run's length. Short copies then cost one
//! store instead of a `memcpy` call (inside a Wasm sandbox, a call out of the module).
//!
//! [`Out`] owns the output and grows when it must. [`Cursor`] writes into the room an `Out`
//! already has and never grows: the hot loop keeps its position and bounds in local variables
//! (inside a sandbox, in registers instead of linear memory) and has nothing to call.

/// Where converted bytes go: what [`Out`] and [`Cursor`] share, so the field writer serves both.
pub(crate) trait Sink {
    /// Appends one byte.
    fn push(&mut self, byte: u8);
    /// Appends bytes.
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// Appends the first `take` (at most 8) bytes of `word` (little-endian).
    fn word(&mut self, word: u64, take: usize);
    /// Appends the first `len` bytes of `words` (little-endian, as [`to_words`] made them).
    fn words(&mut self, words: &[u64], len: usize);
    /// Appends the first `len` (at most 16) of sixteen bytes (all sixteen are stored: one
    /// store).
    fn sixteen(&mut self, bytes: &[u8; 16], len: usize);
}

/// Output under construction.
#[derive(Debug, Default)]
pub(crate) struct Out {
    buffer: Vec<u8>,
    len: usize,
}

impl Out {
    /// Room for `capacity` bytes before the buffer grows.
    #[cfg(test)]
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buffer: vec![0; capacity.max(64)],
            len: 0,
        }
    }

    /// Makes room for `more` bytes past the end.
    #[inline(always)]
    pub(crate) fn reserve(&mut self, more: usize) {
        if self.len + more > self.buffer.len() {
            let grown = (self.buffer.len() * 2).max(self.len + more);
            self.buffer.resize(grown, 0);
        }
    }

    /// A cursor over the room past the end (at most `window` bytes of it); [`Self::advance`]
    /// takes the position it reached.
    pub(crate) fn cursor(&mut self, window: usize) -> Cursor<'_> {
        let end = self.buffer.len().min(self.len.saturating_add(window));
        Cursor {
            buffer: &mut self.buffer[..end],
            len: self.len,
        }
    }

    /// Takes the position a [`Cursor`] reached: bytes up to `len` are output.
    pub(crate) fn advance(&mut self, len: usize) {
        assert!(len <= self.buffer.len(), "a cursor stays inside the buffer");
        self.len = len;
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets what was written; the room stays (already initialised: nothing is zeroed again).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// What was written.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buffer[..self.len]
    }

    /// The output.
    #[cfg(test)]
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.buffer.truncate(self.len);
        self.buffer
    }
}

impl Sink for Out {
    #[inline(always)]
    fn push(&mut self, byte: u8) {
        self.reserve(1);
        self.buffer[self.len] = byte;
        self.len += 1;
    }

    #[inline(always)]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    #[inline(always)]
    fn word(&mut self, word: u64, take: usize) {
        self.reserve(8);
        self.buffer[self.len..self.len + 8].copy_from_slice(&word.to_le_bytes());
        self.len += take;
    }

    #[inline(always)]
    fn words(&mut self, words: &[u64], len: usize) {
        self.reserve(words.len() * 8);
        for (index, word) in words.iter().enumerate() {
            let at = self.len + index * 8;
            self.buffer[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        self.len += len;
    }

    #[inline(always)]
    fn sixteen(&mut self, bytes: &[u8; 16], len: usize) {
        self.reserve(16);
        self.buffer[self.len..self.len + 16].copy_from_slice(bytes);
        self.len += len;
    }
}

/// Writes into the room an [`Out`] has, without growing it. A write that does not fit is dropped
/// and marks the cursor [`full`](Self::is_full) (every later write is dropped too): the caller
/// goes back to a mark and lets `Out` grow.
#[derive(Debug, Default)]
pub(crate) struct Cursor<'a> {
    buffer: &'a mut [u8],
    /// The position reached; past the buffer's end once a write did not fit. The mark lives in
    /// the position instead of a flag beside it: one value less for the hot loop to keep in a
    /// register.
    len: usize,
}

impl Cursor<'_> {
    /// The position reached.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether a write did not fit since the last [`Self::truncate`].
    #[inline(always)]
    pub(crate) fn is_full(&self) -> bool {
        self.len > self.buffer.len()
    }

    /// Goes back to `len` (a position this cursor reached) and forgets any write that did not
    /// fit.
    #[inline(always)]
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = len;
    }

    /// The next `size` bytes of room, or `None` (and the cursor marked full: its position moves
    /// past the end, where no write fits).
    #[inline(always)]
    fn room(&mut self, size: usize) -> Option<&mut [u8]> {
        let end = self.buffer.len();
        match self.buffer.get_mut(self.len..self.len + size) {
            Some(room) => Some(room),
            None => {
                self.len = end + 1;
                None
            }
        }
    }
}

impl Sink for Cursor<'_> {
    #[inline(always)]
    fn push(&mut self, byte: u8) {
        if let Some(room) = self.room(1) {
            room[0] = byte;
            self.len += 1;
        }
    }

    #[inline(always)]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        if let Some(room) = self.room(bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    #[inline(always)]
    fn word(&mut self, word: u64, take: usize) {
        if let Some(room) = self.room(8) {
            room.copy_from_slice(&word.to_le_bytes());
            self.len += take;
        }
    }

    #[inline(always)]
    fn words(&mut self, words: &[u64], len: usize) {
        if let Some(room) = self.room(words.len() * 8) {
            for (word, room) in words.iter().zip(room.chunks_exact_mut(8)) {
                room.copy_from_slice(&word.to_le_bytes());
            }
            self.len += len;
        }
    }

    #[inline(always)]
    fn sixteen(&mut self, bytes: &[u8; 16], len: usize) {
        if let Some(room) = self.room(16) {
            room.copy_from_slice(bytes);
            self.len += len;
        }
    }
}

/// `bytes` as little-endian words (the last one zero-padded), for [`Sink::words`].
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

    #[test]
    fn a_cursor_writes_only_into_the_room_and_says_when_a_write_did_not_fit() {
        let mut out = Out::with_capacity(0);
        out.extend_from_slice(b"ab");
        let mut cursor = out.cursor(20);
        cursor.sixteen(b"cdefghijklmnopqr", 10);
        assert!(!cursor.is_full());
        let mark = cursor.len();
        // Sixteen bytes are stored even when fewer count: they need sixteen of room.
        cursor.sixteen(&[0; 16], 1);
        assert!(cursor.is_full(), "16 bytes at 12 of a 22-byte window");
        cursor.push(b'!');
        assert!(
            cursor.is_full(),
            "a byte that would fit is dropped once one write did not"
        );
        cursor.truncate(mark);
        cursor.push(b'!');
        assert_eq!(
            cursor.len(),
            mark + 1,
            "after going back, writes that fit count"
        );
        cursor.truncate(mark);
        assert!(!cursor.is_full());
        cursor.words(&to_words(b"0123456789"), 10);
        assert!(cursor.is_full(), "two words at 12 of 22");
        cursor.truncate(mark);
        cursor.word(u64::from_le_bytes(*b"stuvwxyz"), 2);
        cursor.extend_from_slice(b"--");
        let end = cursor.len();
        out.advance(end);
        assert_eq!(out.into_vec(), b"abcdefghijklst--");
    }
}
