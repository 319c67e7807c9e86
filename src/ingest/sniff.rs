//! Telling an upload's format when its `Content-Type` does not: from its first non-blank byte,
//! looked for in a bounded prefix. Each byte is looked at once and at most [`SNIFF_WINDOW`] bytes
//! are kept (to be replayed, so the data reaches the next step unchanged): an upload of nothing
//! but blanks costs no more than reading it.

use std::io;

use export_convert::ConvertError;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::convert::Rejected;
use super::rows::sniff;
use crate::domain::Format;

/// The most leading blank bytes an upload of undeclared format may start with: the prefix in
/// which its first character is looked for.
pub const SNIFF_WINDOW: usize = 64 * 1024;

/// The uploaded format, and the bytes read to tell it (to be read again before the rest).
#[derive(Debug)]
pub struct Sniffed {
    /// The format of the data (`otherwise` when it is blank to its end).
    pub format: Format,
    /// The bytes read so far, at most [`SNIFF_WINDOW`].
    pub prefix: Vec<u8>,
}

/// Reads `input` up to its first non-blank byte and tells the format from it; data that is
/// blank to its end is taken to be in `otherwise`. More than [`SNIFF_WINDOW`] leading blanks are
/// refused ([`Rejected`] in the `io::Error`): the format cannot be told within the prefix.
pub async fn sniff_format<R: AsyncRead + Unpin>(
    input: &mut R,
    otherwise: Format,
) -> io::Result<Sniffed> {
    let mut prefix = vec![0u8; SNIFF_WINDOW];
    // How many leading bytes were read, all of them blank: each byte is looked at once.
    let mut blank = 0;
    loop {
        if blank == SNIFF_WINDOW {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Rejected(ConvertError {
                    record: None,
                    message: format!(
                        "the format cannot be told: the first {SNIFF_WINDOW} bytes are blank; \
                         send the data with Content-Type text/csv or application/json"
                    ),
                }),
            ));
        }
        let read = input.read(&mut prefix[blank..]).await?;
        if read == 0 {
            prefix.truncate(blank);
            return Ok(Sniffed {
                format: otherwise,
                prefix,
            });
        }
        let fresh = &prefix[blank..blank + read];
        if let Some(first) = fresh.iter().find(|byte| !byte.is_ascii_whitespace()) {
            let format = sniff(*first);
            prefix.truncate(blank + read);
            return Ok(Sniffed { format, prefix });
        }
        blank += read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncRead;

    /// A reader of `total` bytes of `byte`, then `tail`, in reads of at most `step` bytes.
    struct Blanks {
        left: usize,
        byte: u8,
        tail: &'static [u8],
        step: usize,
    }

    impl AsyncRead for Blanks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buffer: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let count = self.left.min(self.step).min(buffer.remaining());
            if count > 0 {
                buffer.put_slice(&vec![self.byte; count]);
                self.left -= count;
            } else {
                let count = self.tail.len().min(buffer.remaining());
                buffer.put_slice(&self.tail[..count]);
                self.tail = &self.tail[count..];
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_first_non_blank_byte_tells_the_format() {
        let mut json = &b" \n\t [1]"[..];
        let sniffed = sniff_format(&mut json, Format::Csv).await.unwrap();
        assert_eq!(sniffed.format, Format::Json);
        assert_eq!(
            sniffed.prefix, b" \n\t [1]",
            "kept to be replayed unchanged"
        );
        let mut csv = &b"\r\nid,name\n"[..];
        assert_eq!(
            sniff_format(&mut csv, Format::Json).await.unwrap().format,
            Format::Csv
        );
        let mut empty = &b"  \n"[..];
        let sniffed = sniff_format(&mut empty, Format::Json).await.unwrap();
        assert_eq!(
            (sniffed.format, sniffed.prefix),
            (Format::Json, b"  \n".to_vec())
        );
    }

    #[tokio::test]
    async fn blanks_up_to_the_window_are_kept_and_replayed() {
        let mut input = Blanks {
            left: SNIFF_WINDOW - 1,
            byte: b'\n',
            tail: b"{\"data\": []}",
            step: 1000,
        };
        let sniffed = sniff_format(&mut input, Format::Csv).await.unwrap();
        assert_eq!(sniffed.format, Format::Json);
        assert!(sniffed.prefix.len() <= SNIFF_WINDOW);
        assert_eq!(sniffed.prefix[SNIFF_WINDOW - 1], b'{');
    }

    #[tokio::test]
    async fn twenty_mib_of_spaces_are_refused_after_the_window() {
        let mut input = Blanks {
            left: 20 * 1024 * 1024,
            byte: b' ',
            tail: b"[]",
            step: 4096,
        };
        let error = sniff_format(&mut input, Format::Json).await.unwrap_err();
        let Some(Rejected(reason)) = error.get_ref().and_then(|inner| inner.downcast_ref()) else {
            panic!("not a rejection: {error}");
        };
        assert!(
            reason.message.contains("first 65536 bytes are blank"),
            "{reason}"
        );
        assert!(
            reason
                .message
                .contains("Content-Type text/csv or application/json")
        );
        // Only the window was read: the rest of the body was never looked at.
        assert_eq!(input.left, 20 * 1024 * 1024 - SNIFF_WINDOW);
    }
}
