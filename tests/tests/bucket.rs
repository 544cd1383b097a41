//! `strata tools bucket ls` over a FILESYSTEM bucket and a real S3 server (s3s-fs).

use std::path::Path;

use strata_objstore::Bucket;
use strata_testkit::gen::{openmetrics, GenSpec};
use strata_testkit::procs::{run, run_ok, strata};
use strata_testkit::s3::S3Server;

/// Make two blocks with strata, upload them under tenants `team-a` and `team-b` (the
/// second with Thanos labels and a 5m resolution), and return their ULIDs.
fn upload_blocks(tmp: &Path, bucket: &Bucket) -> Vec<String> {
    let spec = GenSpec {
        duration_ms: 3 * 3600 * 1000,
        min_series: 30,
        ..GenSpec::default()
    };
    let input = tmp.join("in.om");
    std::fs::write(&input, openmetrics(&spec).0).unwrap();
    let out = tmp.join("blocks");
    run_ok(
        strata()
            .args(["tools", "tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&input)
            .arg(&out),
    );
    let mut ids: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "3h from an aligned start makes two 2h blocks");
    // give the second block external labels and a resolution, as a sidecar/compactor would
    let meta_path = out.join(&ids[1]).join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["thanos"] = serde_json::json!({"labels": {"cluster": "c1", "replica": "a"}, "downsample": {"resolution": 300000}, "source": "sidecar"});
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        bucket
            .upload_dir(out.join(&ids[0]), &format!("team-a/{}", ids[0]))
            .await
            .unwrap();
        bucket
            .upload_dir(out.join(&ids[1]), &format!("team-b/{}", ids[1]))
            .await
            .unwrap();
    });
    ids
}

fn check_ls(config_yaml: &str, tmp: &Path, ids: &[String]) {
    let cfg = tmp.join("bucket.yml");
    std::fs::write(&cfg, config_yaml).unwrap();
    let table = run_ok(
        strata()
            .args(["tools", "bucket", "ls", "--objstore.config-file"])
            .arg(&cfg),
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TENANT"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].starts_with("team-a") && lines[1].contains(&ids[0]) && lines[1].contains(" raw "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("team-b") && lines[2].contains(&ids[1]),
        "{table}"
    );
    assert!(
        lines[2].contains("cluster=c1,replica=a") && lines[2].contains("5m0s"),
        "{table}"
    );
    // the time range shown is the block's: 2h for the first block, from an aligned start
    assert!(lines[1].contains("2023-11-14T"), "{table}");

    let json = run_ok(
        strata()
            .args([
                "tools",
                "bucket",
                "ls",
                "-o",
                "json",
                "--tenant",
                "team-b",
                "--objstore.config-file",
            ])
            .arg(&cfg),
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["ulid"], ids[1].as_str());
    assert_eq!(v["tenant"], "team-b");
    assert_eq!(v["thanos"]["downsample"]["resolution"], 300000);
}

#[test]
fn bucket_ls_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bucket");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.display()
    );
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let ids = upload_blocks(tmp.path(), &bucket);
    check_ls(&yaml, tmp.path(), &ids);
}

#[test]
fn bucket_ls_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let yaml = s3.objstore_yaml("strata");
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let ids = upload_blocks(tmp.path(), &bucket);
    check_ls(&yaml, tmp.path(), &ids);
}

#[test]
fn bucket_ls_bad_config_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, "type: S4\nconfig: {}\n").unwrap();
    let out = run(strata()
        .args(["tools", "bucket", "ls", "--objstore.config-file"])
        .arg(&cfg));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("S4") && err.contains("bucket.yml"), "{err}");
}

/// `tools bucket mark`: no-compact and deletion marks in Thanos's shape, removable; an
/// unknown block is refused before anything is written; `ls` hides deletion-marked
/// blocks.
#[test]
fn bucket_mark_puts_and_removes_marks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bucket");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.display()
    );
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let ids = upload_blocks(tmp.path(), &bucket);
    let cfg = tmp.path().join("bucket.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let mark = |args: &[&str]| {
        run(strata()
            .args(["tools", "bucket", "mark", "--objstore.config-file"])
            .arg(&cfg)
            .args(args))
    };
    let block = dir.join("team-a").join(&ids[0]);

    let out = mark(&[
        "--tenant=team-a",
        "--id",
        &ids[0],
        "--marker=no-compact-mark.json",
        "--details=overlaps a backfill",
    ]);
    assert!(out.status.success(), "{out:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(block.join("no-compact-mark.json")).unwrap())
            .unwrap();
    assert_eq!(m["id"], ids[0].as_str());
    assert_eq!(m["version"], 1);
    assert_eq!(m["reason"], "manual");
    assert_eq!(m["details"], "overlaps a backfill");
    assert!(m["no_compact_time"].as_i64().unwrap() > 1_700_000_000);

    let out = mark(&[
        "--tenant=team-a",
        "--id",
        &ids[0],
        "--marker=no-compact-mark.json",
        "--remove",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!block.join("no-compact-mark.json").exists());

    // A ULID that is not in the tenant: refused, and the good one is not marked either.
    let out = mark(&[
        "--tenant=team-a",
        "--id",
        &ids[0],
        "--id",
        &ids[1],
        "--marker=deletion-mark.json",
        "--details=x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ids[1]) && err.contains("not found"), "{err}");
    assert!(!block.join("deletion-mark.json").exists());

    let out = mark(&[
        "--tenant=team-a",
        "--id",
        &ids[0],
        "--marker=deletion-mark.json",
        "--details=bad data",
    ]);
    assert!(out.status.success(), "{out:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(block.join("deletion-mark.json")).unwrap()).unwrap();
    assert_eq!(m["details"], "bad data");
    assert!(m["deletion_time"].as_i64().unwrap() > 1_700_000_000);
    let ls = run_ok(
        strata()
            .args([
                "tools",
                "bucket",
                "ls",
                "-o",
                "json",
                "--objstore.config-file",
            ])
            .arg(&cfg),
    );
    assert!(!ls.contains(&ids[0]), "{ls}");
    assert!(ls.contains(&ids[1]), "{ls}");
    // Details are required when marking.
    let out = mark(&[
        "--tenant=team-a",
        "--id",
        &ids[0],
        "--marker=no-compact-mark.json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--details"));
}
