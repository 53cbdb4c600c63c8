//! Case 5, churn: thousands of connect → `NAME` → `MSG` → disconnect cycles
//! from concurrent workers, ending cleanly, with `LEAVE` or with a reset.
//! Afterwards the server is back to its idle state: the same open file
//! descriptors (each session task owns its socket, so no leaked task either),
//! no more threads, no name still held, and bounded memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::{assert_alive, server, Row};
use crate::probe::{self, Usage};
use crate::wire;
use crate::witness::{Event, Witnesses};
use crate::TIMEOUT;

/// Memory the server may keep after the churn beyond its idle RSS
/// (allocator caches, a grown broadcast ring): far below what leaking even
/// a small part of thousands of sessions would take.
const RSS_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

pub async fn churn(scale: &super::Scale, _seed: u64) -> Row {
    let started = Instant::now();
    let server = server(&[]);
    let witnesses = Witnesses::start(server.addr()).await;
    let idle = Usage::of(server.pid());
    let workers = scale.churn_workers;
    let each = scale.churn_cycles / workers;
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(worker(server.addr(), w, each)));
    }
    for task in tasks {
        task.await.expect("a churn worker");
    }
    let cycles = workers * each;
    let churned = started.elapsed();
    witnesses
        .wait_events(2 * cycles, Duration::from_secs(60))
        .await;
    let after = probe::eventually("file descriptors back to idle", TIMEOUT, || {
        let now = Usage::of(server.pid());
        if now.fds <= idle.fds {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await;
    assert!(
        after.threads <= idle.threads,
        "threads grew from {} to {}",
        idle.threads,
        after.threads
    );
    assert!(
        after.rss_kib <= idle.rss_kib + RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {} KiB to {} KiB",
        idle.rss_kib,
        after.rss_kib
    );
    // No name is still held by a departed user.
    let (_auditor, names) = server.login("auditor").await;
    assert_eq!(names, ["auditor", "witness-a", "witness-b"]);
    let verdict = witnesses.finish().await;
    verdict.assert_intact();
    let events = &verdict.events;
    let messages = verdict.foreign_total();
    let mut per_name: HashMap<&str, Vec<bool>> = HashMap::new();
    for event in events {
        match event {
            Event::Join(n) | Event::Leave(n) if n == "auditor" => {}
            Event::Join(n) => per_name.entry(n).or_default().push(true),
            Event::Leave(n) => per_name.entry(n).or_default().push(false),
        }
    }
    assert_eq!(per_name.len(), cycles, "users seen");
    for (name, seen) in &per_name {
        assert_eq!(seen, &[true, false], "{name}: not one JOIN then one LEAVE");
    }
    assert_eq!(messages, cycles as u64, "one MSG per cycle");
    assert_alive(&server, "churn");
    let mut row = Row::new("5 churn", started);
    row.tried = format!(
        "{cycles} connect → NAME → MSG → disconnect cycles from {workers} workers in {:.1} s \
         ({:.0}/s), a third each ending by close, by `LEAVE`, by reset",
        churned.as_secs_f64(),
        cycles as f64 / churned.as_secs_f64()
    );
    row.held = format!(
        "each user one JOIN, one MSG, one LEAVE; afterwards fds {} → {}, threads {} → {}, \
         RSS {:.1} → {:.1} MiB, `NAMES` only the witnesses; {}",
        idle.fds,
        after.fds,
        idle.threads,
        after.threads,
        idle.rss_mib(),
        after.rss_mib(),
        verdict.summary()
    );
    row.lost = verdict.lost;
    row.peak_rss_mib = Some(after.rss_mib());
    row
}

async fn worker(addr: SocketAddr, w: usize, cycles: usize) {
    for i in 0..cycles {
        let name = format!("c{w}-{i}");
        let (mut reader, mut writer) = wire::login(addr, &name).await;
        writer.write_all(b"MSG hi\n").await.expect("send");
        let echo = format!("MSG {name} hi");
        while reader.line().await != echo {}
        match i % 3 {
            0 => drop((reader, writer)),
            1 => {
                writer.write_all(b"LEAVE\n").await.expect("send");
                while reader.line().await != "BYE" {}
                reader.until_closed().await;
            }
            _ => wire::reset(reader, writer),
        }
    }
}
