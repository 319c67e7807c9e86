//! The service process SIGKILLed while it streams a large archive into S3 (a real kill, no
//! chance to clean up): started again on the same database and S3, it re-drives the job once
//! the dead claim's lease runs out, and the bucket ends with exactly one archive, which is
//! valid.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::archive::{Expected, check_archive, csv_rows};
use crate::harness::{
    Caller, Database, EXAMPLE_PSK, S3Server, Service, base_settings, figure, with,
};

/// Rows of the generated source: about 50 MiB of CSV, whose archive is several 5 MiB parts.
const ROWS: u64 = 2_000_000;
/// Rows per generated chunk of the upload.
const ROWS_PER_CHUNK: u64 = 50_000;

/// The generated source, chunk by chunk (the same bytes every time).
fn chunks() -> impl Iterator<Item = Bytes> {
    std::iter::once(Bytes::from_static(b"id,name,value\n")).chain(
        (0..ROWS)
            .step_by(usize::try_from(ROWS_PER_CHUNK).unwrap())
            .map(|start| Bytes::from(csv_rows(start..(start + ROWS_PER_CHUNK).min(ROWS)))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_archive_leaves_exactly_one_valid_archive_after_its_restart() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let settings = with(
        base_settings(&database, &s3),
        &[
            // The shortest claim: the restarted process re-drives the job within 10 s.
            ("PACKAGE_LEASE", "10s"),
            // The smallest parts, so the archive is stored in several.
            ("AWS_UPLOADER_BUFFER_SIZE", "5242880"),
        ],
    );
    let mut service = Service::start(settings).await;
    let pool = database.pool().await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(&caller, "csv", &[("exampleApp", "exampleResource")])
        .await;

    let (digest, size) = chunks().fold((Sha256::new(), 0u64), |(mut hasher, size), chunk| {
        hasher.update(&chunk);
        (hasher, size + chunk.len() as u64)
    });
    let digest = hex::encode(digest.finalize());
    let started = Instant::now();
    let body =
        reqwest::Body::wrap_stream(futures::stream::iter(chunks().map(Ok::<_, std::io::Error>)));
    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            body,
        )
        .await;
    assert_eq!(reply.status, 202, "upload: {}", reply.text);
    figure("service_kill", "source size (MiB)", size / (1024 * 1024));
    figure(
        "service_kill",
        "upload seconds",
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );

    // Packaging has started once its job is claimed and not finished.
    let job = || async {
        sqlx::query_as::<_, (i32, bool)>(
            "SELECT attempts, finished_at IS NOT NULL FROM package_jobs WHERE export_id = $1::uuid",
        )
        .bind(&export)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match job().await {
            Some((attempts, false)) if attempts >= 1 => break,
            Some((_, true)) => panic!("packaging finished before the kill: make the source bigger"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "packaging never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-archive: the archive's first part is stored (the source's upload completed, so its
    // parts are gone), and the archive is not finished (checked after the kill).
    let packaging = Instant::now();
    while s3.parts_in_progress() == 0 {
        if let Some((_, true)) = job().await {
            panic!("packaging finished before its first part was seen: make the source bigger");
        }
        assert!(
            packaging.elapsed() < Duration::from_secs(60),
            "the archive's first part was not stored within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.sigkill();
    figure(
        "service_kill",
        "archive parts stored before the kill",
        s3.parts_in_progress(),
    );
    let (attempts, finished) = job().await.unwrap();
    assert!(
        !finished,
        "packaging finished before the kill: make the source bigger"
    );
    figure(
        "service_kill",
        "seconds of packaging before the kill",
        format!("{:.1}", packaging.elapsed().as_secs_f64()),
    );
    let prefix = format!("org-faults/{export}/");
    let archives_after_kill = s3.list(&prefix).await;
    assert!(
        archives_after_kill.iter().all(|key| !key.ends_with(".zip")),
        "the killed attempt left no finished archive: {archives_after_kill:?}"
    );

    let restarted = Instant::now();
    service.restart().await;
    service
        .wait_for_status(&caller, &export, "complete", Duration::from_secs(180))
        .await;
    figure(
        "service_kill",
        "seconds from the restart to the export's completion",
        format!("{:.1}", restarted.elapsed().as_secs_f64()),
    );
    let (attempts_now, _) = job().await.unwrap();
    assert!(
        attempts_now > attempts,
        "the job was re-driven after the kill"
    );

    let archives: Vec<String> = s3
        .list(&prefix)
        .await
        .into_iter()
        .filter(|key| key.ends_with(".zip"))
        .collect();
    assert_eq!(archives.len(), 1, "exactly one archive: {archives:?}");
    // Not an object, but storage all the same (an S3 lifecycle rule aborts such uploads).
    figure(
        "service_kill",
        "parts of the killed attempt's upload left in the store",
        s3.parts_in_progress(),
    );

    let archive = service.download(&caller, &export).await;
    check_archive(
        archive,
        &[Expected {
            source: &sources[0],
            format: "csv",
            sha256: digest,
        }],
        &[],
    );
}
