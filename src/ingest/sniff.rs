//! Telling an upload's format when its `Content-Type` does not: from its first non-blank byte,
//! looked for in a bounded prefix. Each byte is looked at once and at most [`SNIFF_WINDOW`] bytes
//! are kept (to be replayed, so the data reaches the next step unchanged): an upload of nothing
//! but blanks costs no more than reading it.

use bytes::Bytes;
use export_convert::ConvertError;
use futures::{Stream, StreamExt};

use super::IngestError;
use super::rows::sniff;
use crate::domain::Format;

/// The most leading blank bytes an upload of undeclared format may start with: the prefix in
/// which its first character is looked for.
pub const SNIFF_WINDOW: usize = 64 * 1024;

/// The uploaded format, and the chunks read to tell it (to be handed on before the rest).
#[derive(Debug)]
pub struct Sniffed {
    /// The format of the data (`otherwise` when it is blank to its end).
    pub format: Format,
    /// The chunks read so far: [`SNIFF_WINDOW`] bytes, give or take the last chunk.
    pub prefix: Vec<Bytes>,
}

/// Reads `input` up to its first non-blank byte and tells the format from it; data that is
/// blank to its end is taken to be in `otherwise`. A first character past [`SNIFF_WINDOW`]
/// leading blanks is refused ([`IngestError::Rejected`]): the format cannot be told within the
/// prefix, and the rest of the body is not read.
pub async fn sniff_format<S>(input: &mut S, otherwise: Format) -> Result<Sniffed, IngestError>
where
    S: Stream<Item = Result<Bytes, IngestError>> + Unpin,
{
    let mut prefix = Vec::new();
    // How many leading bytes were read, all of them blank: each byte is looked at once.
    let mut blank = 0;
    while let Some(chunk) = input.next().await {
        let chunk = chunk?;
        let first = chunk.iter().position(|byte| !byte.is_ascii_whitespace());
        if blank + first.unwrap_or(chunk.len()) >= SNIFF_WINDOW {
            return Err(IngestError::Rejected(ConvertError {
                record: None,
                message: format!(
                    "the format cannot be told: the first {SNIFF_WINDOW} bytes are blank; \
                     send the data with Content-Type text/csv or application/json"
                ),
            }));
        }
        if let Some(first) = first {
            let format = sniff(chunk[first]);
            prefix.push(chunk);
            return Ok(Sniffed { format, prefix });
        }
        blank += chunk.len();
        prefix.push(chunk);
    }
    Ok(Sniffed {
        format: otherwise,
        prefix,
    })
}

/// Removes the blanks `prefix` starts with (whole chunks of them, and the start of the first
/// chunk with data).
pub fn drop_leading_blanks(prefix: &mut Vec<Bytes>) {
    let blank_chunks = prefix
        .iter()
        .take_while(|chunk| chunk.iter().all(u8::is_ascii_whitespace))
        .count();
    prefix.drain(..blank_chunks);
    if let Some(first) = prefix.first_mut() {
        let blanks = first
            .iter()
            .take_while(|byte| byte.is_ascii_whitespace())
            .count();
        let _ = first.split_to(blanks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `total` bytes of `byte` in chunks of `step`, then `tail`; `left` counts what was not
    /// read yet.
    struct Blanks {
        left: usize,
        byte: u8,
        tail: &'static [u8],
        step: usize,
    }

    impl Stream for Blanks {
        type Item = Result<Bytes, IngestError>;

        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            let count = self.left.min(self.step);
            let chunk = if count > 0 {
                self.left -= count;
                Bytes::from(vec![self.byte; count])
            } else if !self.tail.is_empty() {
                Bytes::from_static(std::mem::take(&mut self.tail))
            } else {
                return std::task::Poll::Ready(None);
            };
            std::task::Poll::Ready(Some(Ok(chunk)))
        }
    }

    fn chunks(bytes: &'static [u8]) -> impl Stream<Item = Result<Bytes, IngestError>> + Unpin {
        futures::stream::iter([Ok(Bytes::from_static(bytes))])
    }

    fn joined(prefix: &[Bytes]) -> Vec<u8> {
        prefix.concat()
    }

    #[tokio::test]
    async fn the_first_non_blank_byte_tells_the_format() {
        let sniffed = sniff_format(&mut chunks(b" \n\t [1]"), Format::Csv)
            .await
            .unwrap();
        assert_eq!(sniffed.format, Format::Json);
        assert_eq!(
            joined(&sniffed.prefix),
            b" \n\t [1]",
            "kept to be replayed unchanged"
        );
        assert_eq!(
            sniff_format(&mut chunks(b"\r\nid,name\n"), Format::Json)
                .await
                .unwrap()
                .format,
            Format::Csv
        );
        let sniffed = sniff_format(&mut chunks(b"  \n"), Format::Json)
            .await
            .unwrap();
        assert_eq!(
            (sniffed.format, joined(&sniffed.prefix)),
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
        let prefix = joined(&sniffed.prefix);
        assert!(prefix.len() <= SNIFF_WINDOW + 1000);
        assert_eq!(prefix[SNIFF_WINDOW - 1], b'{');
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
        let IngestError::Rejected(reason) = error else {
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

    #[test]
    fn leading_blanks_are_dropped_across_chunks() {
        let mut prefix = vec![
            Bytes::from_static(b" \n"),
            Bytes::from_static(b"\t id"),
            Bytes::from_static(b" x"),
        ];
        drop_leading_blanks(&mut prefix);
        assert_eq!(joined(&prefix), b"id x");
    }
}
