//! The tracer as a daemon: clean stop on SIGTERM with nothing left loaded, SIGHUP reopening its
//! output for logrotate, and size-based rotation while tracing.

use std::{collections::BTreeSet, process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{Lab, Records, TracerRun, require_root};

/// IDs of the BPF programs or links (`key` `prog_id` or `link_id`) that process `pid` holds
/// open, from its fdinfo: exactly ours, whatever else is loaded on the host meanwhile.
fn held_by(pid: u32, key: &str) -> anyhow::Result<BTreeSet<u64>> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(fd?.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some(id) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                ids.insert(id.trim().parse()?);
            }
        }
    }
    Ok(ids)
}

/// IDs of every loaded BPF program (or link).
fn loaded(what: &str) -> anyhow::Result<BTreeSet<u64>> {
    let out = Command::new("bpftool")
        .args([what, "show", "-j"])
        .output()?;
    anyhow::ensure!(out.status.success(), "bpftool {what} show failed: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// Refused connects from an unwatched-by-default process the tracer is told to watch.
fn refused_burst(lab: &Lab, n: u32) -> anyhow::Result<()> {
    let script = format!(
        "import socket\nfor _ in range({n}):\n  s=socket.socket()\n  try: s.connect(('{}',9))\n  except OSError: pass\n  s.close()",
        lab.up_addr
    );
    lab.run(&lab.px, &["python3", "-c", &script])?;
    Ok(())
}

/// The refused connects of this lab's bursts: every test here watches python3, and other
/// tests' python3 processes run at the same time.
fn refusals(recs: &Records, lab: &Lab) -> usize {
    recs.to("connect_error", &format!("{}:9", lab.up_addr))
        .len()
}

#[test]
fn sigterm_stops_within_two_seconds_and_unloads_everything() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("term")?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    let ours = held_by(tracer.pid(), "prog_id")?;
    let our_links = held_by(tracer.pid(), "link_id")?;
    // bpftool sees them loaded, so that seeing them gone below means something.
    assert!(
        ours.is_subset(&loaded("prog")?),
        "bpftool does not list our programs"
    );
    // One program and one link per hook of the attach table, more with the SSL_write uprobes.
    let hooks = tracer::probe::attach::HOOKS.len();
    assert!(ours.len() >= hooks, "only {} programs loaded", ours.len());
    assert!(our_links.len() >= hooks, "only {} links", our_links.len());
    refused_burst(&lab, 20)?;
    let (recs, took) = tracer.stop_with(libc::SIGTERM)?;
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    // Records::read already refused a cut last line; the last one is the final stats.
    let last = recs.0.last().expect("records");
    assert_eq!(last["type"], "stats");
    assert_eq!(last["final"], true);
    assert_eq!(refusals(&recs, &lab), 20, "{}", recs.dump());
    // The kernel frees a program after an RCU grace period: give it a moment.
    let gone = tracer_tests::lab::wait_for(Duration::from_secs(2), || {
        loaded("prog").ok()?.is_disjoint(&ours).then_some(())
    });
    let left: Vec<u64> = loaded("prog")?.intersection(&ours).copied().collect();
    assert!(
        gone.is_some() && left.is_empty(),
        "programs still loaded: {left:?}"
    );
    let left: Vec<u64> = loaded("link")?.intersection(&our_links).copied().collect();
    assert!(left.is_empty(), "links still attached: {left:?}");
    Ok(())
}

#[test]
fn sighup_reopens_the_output_for_logrotate() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("hup")?;
    let tracer = TracerRun::start(&lab.dir, &["--comm", "python3"])?;
    refused_burst(&lab, 5)?;
    std::thread::sleep(Duration::from_millis(300));
    let moved = lab.dir.join("trace.jsonl.1");
    std::fs::rename(&tracer.output, &moved)?;
    tracer.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    refused_burst(&lab, 5)?;
    let recs = tracer.stop()?;
    let old = Records::read(&moved)?;
    assert_eq!(refusals(&old, &lab), 5, "{}", old.dump());
    assert_eq!(refusals(&recs, &lab), 5, "{}", recs.dump());
    assert_eq!(recs.final_stats().expect("stats")["final"], true);
    Ok(())
}

#[test]
fn output_rotates_by_size_with_gzip() -> anyhow::Result<()> {
    require_root();
    let lab = Lab::new("rot")?;
    let tracer = TracerRun::start(
        &lab.dir,
        &[
            "--comm",
            "python3",
            "--rotate-size",
            "16KiB",
            "--rotate-keep",
            "3",
            "--rotate-gzip",
        ],
    )?;
    refused_burst(&lab, 200)?;
    let output = tracer.output.clone();
    let recs = tracer.stop()?;
    let mut total = recs.0.len();
    for n in 1..=3 {
        let gz = std::path::PathBuf::from(format!("{}.{n}.gz", output.display()));
        anyhow::ensure!(gz.exists(), "{} missing", gz.display());
        let text = {
            let out = Command::new("gzip").arg("-dc").arg(&gz).output()?;
            anyhow::ensure!(out.status.success(), "{} is not valid gzip", gz.display());
            String::from_utf8(out.stdout)?
        };
        assert!(text.ends_with('\n'), "{} ends mid-line", gz.display());
        assert!(
            text.len() <= 16 * 1024,
            "{} holds {} bytes",
            gz.display(),
            text.len()
        );
        for line in text.lines() {
            let _: Value = serde_json::from_str(line)?;
            total += 1;
        }
    }
    assert!(!std::path::PathBuf::from(format!("{}.4.gz", output.display())).exists());
    assert!(total > 100, "{total} records across the files");
    Ok(())
}

#[test]
fn a_full_disk_is_counted_while_tracing_and_live_readers_go_on() -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    require_root();
    let lab = Lab::new("full")?;
    let disk = lab.dir.join("disk");
    std::fs::create_dir_all(&disk)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tracer-full"])
        .arg(&disk)
        .status()?;
    anyhow::ensure!(mounted.success(), "mounting a tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let tracer = TracerRun::start(&disk, &["--comm", "python3"])?;
    // A live reader on the control socket, counting what it gets. Other tests' python3
    // processes run at the same time: only this lab's upstream counts.
    let stream = std::os::unix::net::UnixStream::connect(&tracer.socket)?;
    let ours = format!("\"raddr\":\"{}:9\"", lab.up_addr);
    let reader = std::thread::spawn(move || {
        let mut errors = 0usize;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"type\":\"connect_error\"") && line.contains(&ours) {
                errors += 1;
            }
        }
        errors
    });
    // About 400 bytes per record and several per connect: far more than 64 KiB.
    refused_burst(&lab, 600)?;
    std::thread::sleep(Duration::from_millis(500));
    let alive = std::path::Path::new(&format!("/proc/{}", tracer.pid())).exists();
    assert!(alive, "the tracer died when the disk filled up");
    let output = tracer.output.clone();
    let (recs, _) = tracer.stop_with(libc::SIGTERM)?;
    let seen_live = reader.join().expect("reader");
    assert_eq!(seen_live, 600, "the live reader lost records");
    // The file holds what fitted, whole lines only (Records::read refuses a cut line).
    let in_file = refusals(&recs, &lab);
    assert!(in_file < 600, "{in_file} records fitted in 64 KiB?");
    let text = std::fs::read_to_string(&output)?;
    assert!(text.ends_with('\n'), "the file ends mid-line");
    Ok(())
}

#[test]
fn the_packaged_systemd_unit_verifies() -> anyhow::Result<()> {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/tracer.service");
    let text = std::fs::read_to_string(unit)?;
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return Ok(());
    };
    anyhow::ensure!(out.status.success(), "systemd-analyze --version failed");
    // Verify a copy that points at the built binary: verify checks that ExecStart exists.
    let dir = std::env::temp_dir().join(format!("tracer-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bin = tracer_tests::tracer::tracer_bin().canonicalize()?;
    let copy = dir.join("tracer.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/tracer", &bin.display().to_string()),
    )?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()?;
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    // The hardening the issue asks for.
    for line in [
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "RuntimeDirectory=tracer",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    Ok(())
}
