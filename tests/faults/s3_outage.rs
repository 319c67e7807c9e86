//! S3 down while an export packages, for longer than packaging's old whole retry window (8
//! attempts, about 64 s of backoff, then the export failed for good): the export must not fail;
//! once S3 is back (same port, same data) it completes and its archive is valid. And S3 hung
//! (frozen: it accepts connections but never answers): every attempt ends at the store's
//! timeouts instead of holding the worker, and the export completes once S3 answers again.

use std::time::{Duration, Instant};

use crate::archive::{Expected, check_archive, csv_rows, sha256_hex};
use crate::harness::{
    Caller, Database, EXAMPLE_PSK, OTHER_PSK, S3Server, Service, base_settings, figure,
    source_status, with,
};

/// How long S3 stays down at least: longer than the old retry window.
const OUTAGE: Duration = Duration::from_secs(70);
/// S3 also stays down until packaging has failed more often than the old limit allowed (8
/// attempts), so the case does not depend on how long each failed attempt took.
const OLD_MAX_ATTEMPTS: i32 = 8;
/// The longest the outage may last before the case gives up on packaging retrying.
const OUTAGE_LIMIT: Duration = Duration::from_secs(150);

#[tokio::test]
async fn an_export_packaging_through_a_70_s_s3_outage_completes_when_s3_returns() {
    let database = Database::create().await;
    let mut s3 = S3Server::start().await;
    let settings = with(
        base_settings(&database, &s3),
        &[
            // Packaging's backoff is capped at 2 s, and a dead store is noticed within 5 s,
            // so the outage spans many attempts.
            ("PACKAGE_RETRY_MAX_DELAY", "2s"),
            ("S3_OPERATION_TIMEOUT", "5s"),
            ("S3_READ_TIMEOUT", "5s"),
        ],
    );
    let service = Service::start(settings).await;
    let pool = database.pool().await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(
            &caller,
            "csv",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        )
        .await;

    // The first source is delivered while S3 is up.
    let data = format!("id,name,value\n{}", csv_rows(0..2000));
    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            data.clone(),
        )
        .await;
    assert_eq!(reply.status, 202, "upload: {}", reply.text);

    // S3 goes away; the second source's error report (no S3 needed) makes every source
    // terminal, so packaging starts with S3 down.
    s3.kill();
    let down = Instant::now();
    let reply = service
        .report_error(&export, "otherApp", &sources[1], OTHER_PSK)
        .await;
    assert_eq!(reply.status, 202, "error report: {}", reply.text);

    let attempts = || async {
        sqlx::query_scalar::<_, i32>("SELECT attempts FROM package_jobs WHERE export_id = $1::uuid")
            .bind(&export)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap_or(0)
    };
    loop {
        let detail = service.status(&caller, &export).await;
        assert!(
            !["complete", "partial", "failed"].contains(&detail["status"].as_str().unwrap_or("")),
            "the export settled while S3 was down ({:?} in): {detail}",
            down.elapsed()
        );
        let tried = attempts().await;
        if down.elapsed() >= OUTAGE && tried > OLD_MAX_ATTEMPTS {
            break;
        }
        assert!(
            down.elapsed() < OUTAGE_LIMIT,
            "packaging tried only {tried} times in {OUTAGE_LIMIT:?} of outage"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let tried = attempts().await;
    figure("s3_outage", "outage survived (s)", down.elapsed().as_secs());
    figure("s3_outage", "packaging attempts during the outage", tried);

    s3.restart().await;
    let back = Instant::now();
    let detail = service
        .wait_for_status(&caller, &export, "partial", Duration::from_secs(60))
        .await;
    figure(
        "s3_outage",
        "seconds from S3's return to the export's completion",
        format!("{:.1}", back.elapsed().as_secs_f64()),
    );
    assert_eq!(source_status(&detail, &sources[0]), "complete", "{detail}");
    assert_eq!(source_status(&detail, &sources[1]), "failed", "{detail}");

    let archive = service.download(&caller, &export).await;
    check_archive(
        archive,
        &[Expected {
            source: &sources[0],
            format: "csv",
            sha256: sha256_hex(data.as_bytes()),
        }],
        &[&sources[1]],
    );
}

#[tokio::test]
async fn a_hung_store_frees_the_packaging_worker_and_the_export_completes_when_it_answers() {
    let database = Database::create().await;
    let s3 = S3Server::start().await;
    let settings = with(
        base_settings(&database, &s3),
        &[
            ("PACKAGE_RETRY_MAX_DELAY", "1s"),
            ("S3_OPERATION_TIMEOUT", "3s"),
            ("S3_READ_TIMEOUT", "3s"),
        ],
    );
    let service = Service::start(settings).await;
    let pool = database.pool().await;
    let caller = Caller::user("org-faults", "alice");
    let (export, sources) = service
        .create_export(
            &caller,
            "csv",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        )
        .await;
    let data = format!("id,name,value\n{}", csv_rows(0..500));
    let reply = service
        .upload(
            &export,
            "exampleApp",
            &sources[0],
            EXAMPLE_PSK,
            "text/csv",
            data.clone(),
        )
        .await;
    assert_eq!(reply.status, 202, "upload: {}", reply.text);

    // The store hangs: connections open, nothing answers. Without timeouts the first
    // attempt would wait forever; with them each attempt ends and the next one starts.
    s3.freeze(true);
    let hung = Instant::now();
    let reply = service
        .report_error(&export, "otherApp", &sources[1], OTHER_PSK)
        .await;
    assert_eq!(reply.status, 202, "error report: {}", reply.text);
    let attempts = || async {
        sqlx::query_scalar::<_, i32>("SELECT attempts FROM package_jobs WHERE export_id = $1::uuid")
            .bind(&export)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .unwrap_or(0)
    };
    while attempts().await < 4 {
        assert!(
            hung.elapsed() < Duration::from_secs(90),
            "attempts against a hung store never ended ({} so far)",
            attempts().await
        );
        let detail = service.status(&caller, &export).await;
        assert_eq!(detail["status"], "running", "{detail}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    figure(
        "s3_hung",
        "seconds for four attempts against a hung store",
        hung.elapsed().as_secs(),
    );
    s3.freeze(false);
    let back = Instant::now();
    service
        .wait_for_status(&caller, &export, "partial", Duration::from_secs(60))
        .await;
    figure(
        "s3_hung",
        "seconds from the store's thaw to the export's completion",
        format!("{:.1}", back.elapsed().as_secs_f64()),
    );
    let archive = service.download(&caller, &export).await;
    check_archive(
        archive,
        &[Expected {
            source: &sources[0],
            format: "csv",
            sha256: sha256_hex(data.as_bytes()),
        }],
        &[&sources[1]],
    );
}
