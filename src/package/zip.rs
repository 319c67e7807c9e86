//! A streaming ZIP writer: entries are compressed as they are read and written straight out,
//! with sizes and CRCs in data descriptors, so nothing is buffered beyond one chunk and the
//! output needs no seeking. ZIP64 structures are used where sizes or offsets need them.

use std::io;

use chrono::{DateTime, Datelike, Timelike, Utc};
use flate2::{Compress, Compression, FlushCompress, Status};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Where archive bytes go.
pub trait Sink {
    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

impl Sink for Vec<u8> {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Entries whose input is at least this large get ZIP64 sizes (with a wide margin for deflate's
/// worst-case expansion below the 4 GiB limit).
const ZIP64_THRESHOLD: u64 = 0xF000_0000;
const READ_CHUNK: usize = 128 * 1024;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
const ZIP64_END_OF_CENTRAL_DIRECTORY: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// General purpose flags: sizes in a data descriptor (bit 3), UTF-8 names (bit 11).
const FLAGS: u16 = 0x0008 | 0x0800;

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    zip64: bool,
}

/// What one entry took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySummary {
    /// Bytes read from the input.
    pub uncompressed: u64,
    /// Bytes written to the archive for the data.
    pub compressed: u64,
}

/// What the finished archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Total bytes written.
    pub bytes: u64,
    /// SHA-256 of the archive, hex.
    pub sha256: String,
}

/// Writes a ZIP archive to a [`Sink`].
pub struct ZipStreamWriter<S: Sink> {
    sink: S,
    offset: u64,
    hasher: Sha256,
    entries: Vec<Entry>,
    level: u32,
    dos_time: u16,
    dos_date: u16,
}

impl<S: Sink + Send> ZipStreamWriter<S> {
    /// An archive whose entries are DEFLATE-compressed at `level` (0 = stored) and dated
    /// `modified`.
    pub fn new(sink: S, level: u32, modified: DateTime<Utc>) -> Self {
        let (dos_time, dos_date) = dos_timestamp(modified);
        Self {
            sink,
            offset: 0,
            hasher: Sha256::new(),
            entries: Vec::new(),
            level: level.min(9),
            dos_time,
            dos_date,
        }
    }

    async fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        self.sink.write(bytes).await
    }

    /// Adds an entry read from `input`; `size_hint` is its expected size (it selects ZIP64).
    pub async fn add_entry(
        &mut self,
        name: &str,
        input: &mut (dyn AsyncRead + Unpin + Send),
        size_hint: u64,
    ) -> io::Result<EntrySummary> {
        let zip64 = size_hint >= ZIP64_THRESHOLD;
        // The central directory needs ZIP64 (version 4.5) for offsets past 4 GiB; say so in the
        // local header too, so both headers agree.
        let needs_version_45 = zip64 || self.offset >= u64::from(u32::MAX);
        let method: u16 = if self.level == 0 { 0 } else { 8 };
        let offset = self.offset;

        let mut header = Vec::with_capacity(30 + name.len() + 20);
        put_u32(&mut header, LOCAL_HEADER);
        put_u16(&mut header, if needs_version_45 { 45 } else { 20 });
        put_u16(&mut header, FLAGS);
        put_u16(&mut header, method);
        put_u16(&mut header, self.dos_time);
        put_u16(&mut header, self.dos_date);
        put_u32(&mut header, 0); // CRC: in the data descriptor
        let size_placeholder = if zip64 { u32::MAX } else { 0 };
        put_u32(&mut header, size_placeholder);
        put_u32(&mut header, size_placeholder);
        put_u16(
            &mut header,
            u16::try_from(name.len()).map_err(|_| invalid("entry name too long"))?,
        );
        put_u16(&mut header, if zip64 { 20 } else { 0 });
        header.extend_from_slice(name.as_bytes());
        if zip64 {
            put_u16(&mut header, 0x0001);
            put_u16(&mut header, 16);
            put_u64(&mut header, 0);
            put_u64(&mut header, 0);
        }
        self.emit(&header).await?;

        let mut crc = crc32fast::Hasher::new();
        let mut uncompressed = 0u64;
        let mut compressed = 0u64;
        let mut input_buffer = vec![0u8; READ_CHUNK];
        let mut output = Vec::with_capacity(READ_CHUNK + 1024);
        let mut deflate = (method == 8).then(|| Compress::new(Compression::new(self.level), false));
        loop {
            let read = input.read(&mut input_buffer).await?;
            let chunk = &input_buffer[..read];
            crc.update(chunk);
            uncompressed += read as u64;
            match deflate.as_mut() {
                None => {
                    if read == 0 {
                        break;
                    }
                    compressed += read as u64;
                    self.emit(chunk).await?;
                }
                Some(deflate) => {
                    let flush = if read == 0 {
                        FlushCompress::Finish
                    } else {
                        FlushCompress::None
                    };
                    let mut consumed = 0;
                    loop {
                        output.clear();
                        let before_in = deflate.total_in();
                        let status = deflate
                            .compress_vec(&chunk[consumed..], &mut output, flush)
                            .map_err(|error| io::Error::other(error.to_string()))?;
                        consumed += usize::try_from(deflate.total_in() - before_in).unwrap_or(0);
                        compressed += output.len() as u64;
                        if !output.is_empty() {
                            self.emit(&output).await?;
                        }
                        let finished = status == Status::StreamEnd;
                        let input_done = consumed >= chunk.len();
                        // Keep going while input remains, or until the stream ends on Finish.
                        if (flush == FlushCompress::Finish && finished)
                            || (flush == FlushCompress::None
                                && input_done
                                && output.len() < output.capacity())
                        {
                            break;
                        }
                    }
                    if read == 0 {
                        break;
                    }
                }
            }
        }
        let crc = crc.finalize();
        if !zip64
            && (compressed > u64::from(u32::MAX - 1) || uncompressed > u64::from(u32::MAX - 1))
        {
            return Err(invalid(
                "entry larger than its size hint allows without ZIP64",
            ));
        }
        let mut descriptor = Vec::with_capacity(24);
        put_u32(&mut descriptor, DATA_DESCRIPTOR);
        put_u32(&mut descriptor, crc);
        if zip64 {
            put_u64(&mut descriptor, compressed);
            put_u64(&mut descriptor, uncompressed);
        } else {
            put_u32(&mut descriptor, compressed as u32);
            put_u32(&mut descriptor, uncompressed as u32);
        }
        self.emit(&descriptor).await?;
        self.entries.push(Entry {
            name: name.to_owned(),
            method,
            crc,
            compressed,
            uncompressed,
            offset,
            zip64,
        });
        Ok(EntrySummary {
            uncompressed,
            compressed,
        })
    }

    /// Writes the central directory and returns the sink with the archive's size and hash.
    pub async fn finish(mut self) -> io::Result<(S, ArchiveSummary)> {
        let directory_offset = self.offset;
        let entries = std::mem::take(&mut self.entries);
        for entry in &entries {
            let needs_size64 = entry.zip64
                || entry.uncompressed >= u64::from(u32::MAX)
                || entry.compressed >= u64::from(u32::MAX);
            let needs_offset64 = entry.offset >= u64::from(u32::MAX);
            let mut extra = Vec::new();
            if needs_size64 || needs_offset64 {
                put_u16(&mut extra, 0x0001);
                let length = if needs_size64 { 16 } else { 0 } + if needs_offset64 { 8 } else { 0 };
                put_u16(&mut extra, length);
                if needs_size64 {
                    put_u64(&mut extra, entry.uncompressed);
                    put_u64(&mut extra, entry.compressed);
                }
                if needs_offset64 {
                    put_u64(&mut extra, entry.offset);
                }
            }
            let mut header = Vec::with_capacity(46 + entry.name.len() + extra.len());
            put_u32(&mut header, CENTRAL_HEADER);
            put_u16(&mut header, (3 << 8) | 45); // made by: Unix, spec 4.5
            put_u16(
                &mut header,
                if needs_size64 || needs_offset64 {
                    45
                } else {
                    20
                },
            );
            put_u16(&mut header, FLAGS);
            put_u16(&mut header, entry.method);
            put_u16(&mut header, self.dos_time);
            put_u16(&mut header, self.dos_date);
            put_u32(&mut header, entry.crc);
            put_u32(
                &mut header,
                if needs_size64 {
                    u32::MAX
                } else {
                    entry.compressed as u32
                },
            );
            put_u32(
                &mut header,
                if needs_size64 {
                    u32::MAX
                } else {
                    entry.uncompressed as u32
                },
            );
            put_u16(&mut header, entry.name.len() as u16);
            put_u16(&mut header, extra.len() as u16);
            put_u16(&mut header, 0); // comment
            put_u16(&mut header, 0); // disk
            put_u16(&mut header, 0); // internal attributes
            put_u32(&mut header, 0o100_644 << 16); // regular file, rw-r--r--
            put_u32(
                &mut header,
                if needs_offset64 {
                    u32::MAX
                } else {
                    entry.offset as u32
                },
            );
            header.extend_from_slice(entry.name.as_bytes());
            header.extend_from_slice(&extra);
            self.emit(&header).await?;
        }
        let directory_size = self.offset - directory_offset;
        let count = entries.len() as u64;
        let needs_zip64 = count >= 0xFFFF
            || directory_size >= u64::from(u32::MAX)
            || directory_offset >= u64::from(u32::MAX);
        let mut end = Vec::with_capacity(98);
        if needs_zip64 {
            let record_offset = self.offset;
            put_u32(&mut end, ZIP64_END_OF_CENTRAL_DIRECTORY);
            put_u64(&mut end, 44);
            put_u16(&mut end, (3 << 8) | 45);
            put_u16(&mut end, 45);
            put_u32(&mut end, 0);
            put_u32(&mut end, 0);
            put_u64(&mut end, count);
            put_u64(&mut end, count);
            put_u64(&mut end, directory_size);
            put_u64(&mut end, directory_offset);
            put_u32(&mut end, ZIP64_LOCATOR);
            put_u32(&mut end, 0);
            put_u64(&mut end, record_offset);
            put_u32(&mut end, 1);
        }
        put_u32(&mut end, END_OF_CENTRAL_DIRECTORY);
        put_u16(&mut end, 0);
        put_u16(&mut end, 0);
        let short_count = if needs_zip64 { 0xFFFF } else { count as u16 };
        put_u16(&mut end, short_count);
        put_u16(&mut end, short_count);
        put_u32(
            &mut end,
            if needs_zip64 {
                u32::MAX
            } else {
                directory_size as u32
            },
        );
        put_u32(
            &mut end,
            if needs_zip64 {
                u32::MAX
            } else {
                directory_offset as u32
            },
        );
        put_u16(&mut end, 0);
        self.emit(&end).await?;
        let summary = ArchiveSummary {
            bytes: self.offset,
            sha256: hex::encode(self.hasher.finalize_reset()),
        };
        Ok((self.sink, summary))
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}

fn put_u16(buffer: &mut Vec<u8>, value: u16) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(buffer: &mut Vec<u8>, value: u32) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

/// MS-DOS time and date (2-second resolution, years 1980–2107).
fn dos_timestamp(time: DateTime<Utc>) -> (u16, u16) {
    let year = time.year().clamp(1980, 2107) as u16;
    let dos_time =
        ((time.hour() as u16) << 11) | ((time.minute() as u16) << 5) | (time.second() as u16 / 2);
    let dos_date = ((year - 1980) << 9) | ((time.month() as u16) << 5) | time.day() as u16;
    (dos_time, dos_date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    async fn build(level: u32, entries: &[(&str, Vec<u8>)]) -> (Vec<u8>, ArchiveSummary) {
        let mut writer = ZipStreamWriter::new(Vec::new(), level, Utc::now());
        for (name, data) in entries {
            let mut input: &[u8] = data;
            let summary = writer
                .add_entry(name, &mut input, data.len() as u64)
                .await
                .unwrap();
            assert_eq!(summary.uncompressed, data.len() as u64);
        }
        writer.finish().await.unwrap()
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
            ("a.csv", big.clone()),
            ("empty.json", Vec::new()),
            ("ünïcode.json", b"{\"k\": [1, 2]}".to_vec()),
        ];
        for level in [0, 1, 6] {
            let (archive, summary) = build(level, &entries).await;
            assert_eq!(summary.bytes, archive.len() as u64);
            assert_eq!(summary.sha256, hex::encode(Sha256::digest(&archive)));
            let back = read_back(&archive);
            assert_eq!(back.len(), 3);
            for ((name, data), (expected_name, expected)) in back.iter().zip(&entries) {
                assert_eq!(name, expected_name);
                assert_eq!(data, expected, "level {level}, {name}");
            }
            if level > 0 {
                assert!(archive.len() < big.len() / 2, "compressed");
            }
        }
    }

    #[tokio::test]
    async fn zip64_entries_read_back() {
        // Force ZIP64 structures with a large size hint on small data.
        let mut writer = ZipStreamWriter::new(Vec::new(), 1, Utc::now());
        let data = b"zip64 entry".to_vec();
        let mut input: &[u8] = &data;
        writer
            .add_entry("big.csv", &mut input, ZIP64_THRESHOLD)
            .await
            .unwrap();
        let (archive, _) = writer.finish().await.unwrap();
        assert_eq!(read_back(&archive), vec![("big.csv".to_string(), data)]);
    }
}
