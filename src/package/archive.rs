//! The archive writer: the `zip` crate's stream writer (data descriptors, ZIP64 where sizes or
//! offsets need it, no seeking) runs on a blocking thread. Entries arrive as [`Feed`] messages
//! over a bounded channel and archive bytes leave in chunks over another, so memory stays at a
//! few chunks whatever the archive's size, and fetching the next source overlaps compressing the
//! current one.
//!
//! Why this crate rather than a writer of our own or `async_zip`: on the same input it costs a
//! hand-written writer's CPU at the default level and stays memory-flat, while `async_zip`'s
//! stream writer ignores the compression level (`bench/results/NOTES.md`, "Archive writer").

use std::io::{self, Write};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Entries whose input is at least this large get ZIP64 sizes (with a wide margin for deflate's
/// worst-case expansion below the 4 GiB limit).
pub const ZIP64_THRESHOLD: u64 = 0xF000_0000;

/// Archive bytes are handed on in chunks of this size.
pub const CHUNK: usize = 1024 * 1024;

/// What the archive writer is told, in order: an entry, its data, the next entry, …, finish.
#[derive(Debug)]
pub enum Feed {
    /// Starts an entry; `size_hint` is its expected size (it selects ZIP64).
    Entry {
        /// The entry's name in the archive.
        name: String,
        /// The expected size of the entry's data.
        size_hint: u64,
    },
    /// The next bytes of the current entry.
    Data(Bytes),
    /// Writes the central directory and ends the archive.
    Finish,
}

/// What the writer hands on: archive bytes, then `Done` once the archive is complete. A
/// channel that closes without `Done` means the archive was abandoned and must not be stored.
#[derive(Debug)]
pub enum Output {
    /// The next archive bytes.
    Chunk(Bytes),
    /// The archive is complete.
    Done,
}

/// What the finished archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Total bytes written.
    pub bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
}

/// Why the archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The `zip` crate refused an entry or failed to write.
    #[error("writing the ZIP failed: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Handing bytes on failed: the consumer stopped.
    #[error("the archive's consumer stopped")]
    ConsumerGone,
    /// The feed ended without [`Feed::Finish`].
    #[error("the archive's input stopped before it was finished")]
    Abandoned,
    /// Data arrived before any entry was started.
    #[error("archive data arrived before an entry was started")]
    DataWithoutEntry,
}

/// Starts the writer on a blocking thread: entries are DEFLATE-compressed at `level`
/// (0 = stored) and dated `modified`.
pub fn spawn_writer(
    level: u32,
    modified: DateTime<Utc>,
    feed: mpsc::Receiver<Feed>,
    output: mpsc::Sender<Output>,
) -> tokio::task::JoinHandle<Result<ArchiveSummary, ArchiveError>> {
    tokio::task::spawn_blocking(move || write_archive(level, modified, feed, output))
}

fn write_archive(
    level: u32,
    modified: DateTime<Utc>,
    mut feed: mpsc::Receiver<Feed>,
    output: mpsc::Sender<Output>,
) -> Result<ArchiveSummary, ArchiveError> {
    let base = entry_options(level.min(9), modified);
    let mut writer = ZipWriter::new_stream(ChunkedOutput::new(output));
    let mut in_entry = false;
    while let Some(message) = feed.blocking_recv() {
        match message {
            Feed::Entry { name, size_hint } => {
                writer.start_file(name, base.large_file(size_hint >= ZIP64_THRESHOLD))?;
                in_entry = true;
            }
            Feed::Data(bytes) if in_entry => writer.write_all(&bytes).map_err(map_write)?,
            Feed::Data(_) => return Err(ArchiveError::DataWithoutEntry),
            Feed::Finish => return writer.finish()?.into_inner().close(),
        }
    }
    Err(ArchiveError::Abandoned)
}

/// The exact length of the stored (level 0) archive of `entries` (name, size), in the order
/// they will be written, dated `modified`.
///
/// The same writer runs with the same options, fed zeros of each entry's size, into a sink that
/// only counts. A stored entry's layout depends on its name and size alone (its CRC has a fixed
/// width), so the real archive has this length byte for byte. Knowing it lets the store take the
/// archive as one streamed request rather than a multipart upload. The cost is one CRC-32 pass
/// over zeros, a small fraction of reading and hashing the sources (`bench/results/NOTES.md`).
pub fn stored_length(
    modified: DateTime<Utc>,
    entries: &[(String, u64)],
) -> Result<u64, ArchiveError> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let base = entry_options(0, modified);
    let mut writer = ZipWriter::new_stream(Counting(0));
    for (name, size) in entries {
        writer.start_file(name.as_str(), base.large_file(*size >= ZIP64_THRESHOLD))?;
        let mut left = *size;
        while left > 0 {
            let step = left.min(ZEROS.len() as u64) as usize;
            writer.write_all(&ZEROS[..step]).map_err(map_write)?;
            left -= step as u64;
        }
    }
    Ok(writer.finish()?.into_inner().0)
}

/// A sink that counts what is written to it.
struct Counting(u64);

impl Write for Counting {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn entry_options(level: u32, modified: DateTime<Utc>) -> SimpleFileOptions {
    let options = SimpleFileOptions::default()
        .unix_permissions(0o644)
        .last_modified_time(dos_time(modified));
    if level == 0 {
        options.compression_method(CompressionMethod::Stored)
    } else {
        options
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(i64::from(level)))
    }
}

/// The archive's timestamp; outside the DOS range (1980–2107) it falls back to 1980-01-01.
fn dos_time(time: DateTime<Utc>) -> zip::DateTime {
    let narrow = |value: u32| u8::try_from(value).unwrap_or(0);
    u16::try_from(time.year())
        .ok()
        .and_then(|year| {
            zip::DateTime::from_date_and_time(
                year,
                narrow(time.month()),
                narrow(time.day()),
                narrow(time.hour()),
                narrow(time.minute()),
                narrow(time.second()),
            )
            .ok()
        })
        .unwrap_or_default()
}

/// A refused hand-over surfaces from the `zip` crate as an I/O error; name it again.
fn map_write(error: io::Error) -> ArchiveError {
    if error.kind() == io::ErrorKind::BrokenPipe {
        ArchiveError::ConsumerGone
    } else {
        ArchiveError::Zip(error.into())
    }
}

/// Collects archive bytes into chunks, hashes and counts them, and hands each chunk on.
struct ChunkedOutput {
    sender: mpsc::Sender<Output>,
    buffer: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

impl ChunkedOutput {
    fn new(sender: mpsc::Sender<Output>) -> Self {
        Self {
            sender,
            buffer: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn hand_on(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Output::Chunk(Bytes::from(chunk)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn close(mut self) -> Result<ArchiveSummary, ArchiveError> {
        self.hand_on().map_err(|_| ArchiveError::ConsumerGone)?;
        self.sender
            .blocking_send(Output::Done)
            .map_err(|_| ArchiveError::ConsumerGone)?;
        Ok(ArchiveSummary {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

impl Write for ChunkedOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.hand_on()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are handed on when full or at `close`; the zip crate's flushes need not wait.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Writes `entries` (name, data, size hint) through the writer and collects the archive.
    async fn build(
        level: u32,
        entries: &[(&str, Vec<u8>, u64)],
    ) -> Result<(Vec<u8>, ArchiveSummary), ArchiveError> {
        let (feed, feed_receiver) = mpsc::channel(4);
        let (output, mut output_receiver) = mpsc::channel(4);
        let writer = spawn_writer(level, Utc::now(), feed_receiver, output);
        let messages: Vec<Feed> = entries
            .iter()
            .flat_map(|(name, data, size_hint)| {
                let data = Bytes::from(data.clone());
                // Several chunks per entry, as a source's body arrives.
                let chunks: Vec<Feed> = (0..data.len())
                    .step_by(100_000)
                    .map(|at| Feed::Data(data.slice(at..data.len().min(at + 100_000))))
                    .collect();
                std::iter::once(Feed::Entry {
                    name: name.to_string(),
                    size_hint: *size_hint,
                })
                .chain(chunks)
            })
            .chain(std::iter::once(Feed::Finish))
            .collect();
        let sending = tokio::spawn(async move {
            for message in messages {
                if feed.send(message).await.is_err() {
                    break;
                }
            }
        });
        let mut archive = Vec::new();
        let mut done = false;
        while let Some(message) = output_receiver.recv().await {
            match message {
                Output::Chunk(bytes) => archive.extend_from_slice(&bytes),
                Output::Done => done = true,
            }
        }
        sending.await.unwrap();
        let summary = writer.await.unwrap()?;
        assert!(done, "a finished archive ends with Done");
        Ok((archive, summary))
    }

    fn read_back(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).expect("a valid archive");
        (0..zip.len())
            .map(|index| {
                let mut file = zip.by_index(index).unwrap();
                let mut data = Vec::new();
                file.read_to_end(&mut data)
                    .expect("CRC and sizes check out");
                (file.name().unwrap().to_string(), data)
            })
            .collect()
    }

    #[tokio::test]
    async fn deflated_and_stored_archives_read_back() {
        let big: Vec<u8> = (0..400_000u32)
            .flat_map(|n| format!("{n},row {n}\n").into_bytes())
            .collect();
        let entries = vec![
            ("a.csv", big.clone(), big.len() as u64),
            ("empty.json", Vec::new(), 0),
            ("ünïcode.json", b"{\"k\": [1, 2]}".to_vec(), 13),
        ];
        for level in [0, 1, 6] {
            let (archive, summary) = build(level, &entries).await.unwrap();
            assert_eq!(summary.bytes, archive.len() as u64);
            assert_eq!(summary.sha256, hex::encode(Sha256::digest(&archive)));
            let back = read_back(&archive);
            assert_eq!(back.len(), 3);
            for ((name, data), (expected_name, expected, _)) in back.iter().zip(&entries) {
                assert_eq!(name, expected_name);
                assert_eq!(data, expected, "level {level}, {name}");
            }
            if level > 0 {
                assert!(archive.len() < big.len() / 2, "compressed");
            } else {
                assert!(archive.len() > big.len(), "stored");
            }
        }
    }

    #[tokio::test]
    async fn the_stored_length_is_the_written_length() {
        let rows: Vec<u8> = (0..50_000u32)
            .flat_map(|n| format!("{n},row {n}\n").into_bytes())
            .collect();
        let named = |name: &str, data: &[u8]| (name.to_owned(), data.to_vec());
        let shapes: Vec<Vec<(String, Vec<u8>)>> = vec![
            vec![],
            vec![named("empty.json", b"")],
            vec![
                named("a.csv", &rows),
                named("ünïcode name with spaces.json", b"{}"),
                named("meta.json", b"{\"k\": 1}"),
            ],
            (0..40)
                .map(|index| named(&format!("many-{index}.csv"), &rows[..1000]))
                .collect(),
        ];
        for entries in shapes {
            let with_hints: Vec<(&str, Vec<u8>, u64)> = entries
                .iter()
                .map(|(name, data)| (name.as_str(), data.clone(), data.len() as u64))
                .collect();
            let (archive, _) = build(0, &with_hints).await.unwrap();
            let sizes: Vec<(String, u64)> = entries
                .iter()
                .map(|(name, data)| (name.clone(), data.len() as u64))
                .collect();
            let predicted = stored_length(Utc::now(), &sizes).unwrap();
            assert_eq!(predicted, archive.len() as u64, "{} entries", sizes.len());
        }
    }

    #[tokio::test]
    async fn zip64_entries_read_back() {
        // Force ZIP64 structures with a large size hint on small data.
        let data = b"zip64 entry".to_vec();
        let (archive, _) = build(1, &[("big.csv", data.clone(), ZIP64_THRESHOLD)])
            .await
            .unwrap();
        assert_eq!(read_back(&archive), vec![("big.csv".to_string(), data)]);
    }

    #[tokio::test]
    async fn an_abandoned_feed_never_ends_with_done() {
        let (feed, feed_receiver) = mpsc::channel(4);
        let (output, mut output_receiver) = mpsc::channel(4);
        let writer = spawn_writer(1, Utc::now(), feed_receiver, output);
        feed.send(Feed::Entry {
            name: "a.csv".into(),
            size_hint: 3,
        })
        .await
        .unwrap();
        feed.send(Feed::Data(Bytes::from_static(b"a,b")))
            .await
            .unwrap();
        drop(feed);
        let mut saw_done = false;
        while let Some(message) = output_receiver.recv().await {
            saw_done |= matches!(message, Output::Done);
        }
        assert!(!saw_done, "an abandoned archive must not look complete");
        assert!(matches!(
            writer.await.unwrap(),
            Err(ArchiveError::Abandoned)
        ));
    }

    #[tokio::test]
    async fn a_stopped_consumer_stops_the_writer() {
        let (feed, feed_receiver) = mpsc::channel(4);
        let (output, output_receiver) = mpsc::channel(1);
        drop(output_receiver);
        let writer = spawn_writer(0, Utc::now(), feed_receiver, output);
        let big = Bytes::from(vec![b'x'; 3 * CHUNK]);
        let _ = feed
            .send(Feed::Entry {
                name: "a.csv".into(),
                size_hint: big.len() as u64,
            })
            .await;
        let _ = feed.send(Feed::Data(big)).await;
        let _ = feed.send(Feed::Finish).await;
        assert!(matches!(
            writer.await.unwrap(),
            Err(ArchiveError::ConsumerGone)
        ));
    }

    #[test]
    fn timestamps_outside_the_dos_range_fall_back() {
        let old = DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(dos_time(old), zip::DateTime::default());
        let now = DateTime::parse_from_rfc3339("2026-12-05T10:20:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let stamp = dos_time(now);
        assert_eq!((stamp.year(), stamp.month(), stamp.day()), (2026, 12, 5));
        assert_eq!((stamp.hour(), stamp.minute(), stamp.second()), (10, 20, 30));
    }
}
