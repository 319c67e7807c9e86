//! A Rust S3 client on the service's own SDK (aws-sdk-s3), the baseline that is not the
//! bottleneck: the benchmark times the service against what this client does with the same
//! bytes and the same server.
//!
//! Each command prints the seconds it took, and nothing else:
//! - `put FILE KEY`: one streamed `PutObject` of the file (its length known up front);
//! - `multipart FILE KEY PART_MIB`: a multipart upload of the file in parts of `PART_MIB`, one
//!   part in flight while the next is read, as the service's multipart path does;
//! - `copy SRC DST [SRC DST]...`: each `SRC` read with `GetObject` and streamed into a
//!   `PutObject` of `DST`, one after the other (the baseline of packaging: read every source,
//!   write the same bytes once).
//!
//! The server and bucket come from `S3_ENDPOINT`, `S3_BUCKET`, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`. Usage: `cargo run --release --example s3-client -- put big.csv k`.

use std::time::Instant;

use anyhow::{Context, bail};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

async fn client() -> anyhow::Result<Client> {
    let credentials = Credentials::new(
        env("AWS_ACCESS_KEY_ID")?,
        env("AWS_SECRET_ACCESS_KEY")?,
        None,
        None,
        "bench",
    );
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .endpoint_url(env("S3_ENDPOINT")?)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    Ok(Client::from_conf(config))
}

async fn put(client: &Client, bucket: &str, file: &str, key: &str) -> anyhow::Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_path(file).await?)
        .customize()
        .disable_payload_signing()
        .send()
        .await?;
    Ok(())
}

async fn read_part(file: &mut tokio::fs::File, size: usize) -> anyhow::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(size);
    while part.len() < size {
        let read = (&mut *file)
            .take((size - part.len()) as u64)
            .read_to_end(&mut part)
            .await?;
        if read == 0 {
            break;
        }
    }
    Ok(part)
}

async fn multipart(
    client: &Client,
    bucket: &str,
    file: &str,
    key: &str,
    part_size: usize,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(file).await?;
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let upload_id = created.upload_id().context("no upload id")?.to_owned();
    let mut parts = Vec::new();
    let mut part = read_part(&mut file, part_size).await?;
    let mut number = 1;
    while !part.is_empty() {
        let upload = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part))
            .customize()
            .disable_payload_signing()
            .send();
        let (uploaded, next) = tokio::join!(upload, read_part(&mut file, part_size));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded?.e_tag().map(str::to_owned))
                .build(),
        );
        part = next?;
        number += 1;
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

async fn copy(client: &Client, bucket: &str, source: &str, target: &str) -> anyhow::Result<()> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(source)
        .send()
        .await?;
    let length = object.content_length().context("no content length")?;
    client
        .put_object()
        .bucket(bucket)
        .key(target)
        .content_length(length)
        .body(object.body)
        .customize()
        .disable_payload_signing()
        .send()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = client().await?;
    let bucket = env("S3_BUCKET")?;
    let started = Instant::now();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["put", file, key] => put(&client, &bucket, file, key).await?,
        ["multipart", file, key, part_mib] => {
            let part_size = part_mib.parse::<usize>()? * 1024 * 1024;
            multipart(&client, &bucket, file, key, part_size).await?;
        }
        ["copy", pairs @ ..] if !pairs.is_empty() && pairs.len() % 2 == 0 => {
            for pair in pairs.chunks(2) {
                copy(&client, &bucket, pair[0], pair[1]).await?;
            }
        }
        _ => bail!("usage: s3-client put FILE KEY | multipart FILE KEY PART_MIB | copy SRC DST..."),
    }
    let seconds = started.elapsed().as_secs_f64();
    #[expect(clippy::print_stdout, reason = "the benchmark reads the figure")]
    {
        println!("{seconds:.4}");
    }
    Ok(())
}
