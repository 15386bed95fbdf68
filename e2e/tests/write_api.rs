//! The write API on the real stack: batches mixed with single POSTs, events with and without
//! ids, a share of them re-sent (whole batches and single events, with the same ids) before
//! and after a processor SIGKILL and a rebalance, late events inside the window. Every hour
//! must equal the ground truth in which each (user, id) counts once and each event without an
//! id counts every time. Bad batches are refused whole and change nothing.

use anyhow::{ensure, Context, Result};
use e2e::http::Client;
use e2e::{Pipeline, PipelineOptions, Stack, PROCESSOR_ARGS};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::Duration;

const HOUR: i64 = 3_600_000;

#[derive(Clone)]
struct Ev {
    ts: i64,
    user: String,
    click: bool,
    id: Option<String>,
}

impl Ev {
    fn line(&self) -> String {
        let mut v = serde_json::json!({
            "timestamp": self.ts,
            "user": self.user,
            "event": if self.click { "click" } else { "impression" },
        });
        if let Some(id) = &self.id {
            v["id"] = id.clone().into();
        }
        v.to_string()
    }

    fn target(&self) -> String {
        let kind = if self.click { "click" } else { "impression" };
        let id = self
            .id
            .as_ref()
            .map(|i| format!("&id={}", loadgen::truth::percent_encode(i)))
            .unwrap_or_default();
        format!(
            "/analytics?timestamp={}&user={}&{kind}{id}",
            self.ts,
            loadgen::truth::percent_encode(&self.user)
        )
    }
}

/// Hour → (users, clicks, impressions), each (user, id) once, id-less events every time.
#[derive(Default)]
struct Truth {
    hours: BTreeMap<i64, (HashSet<String>, u64, u64)>,
    pairs: HashSet<(String, String)>,
}

impl Truth {
    fn acknowledged(&mut self, e: &Ev) {
        if let Some(id) = &e.id {
            if !self.pairs.insert((e.user.clone(), id.clone())) {
                return;
            }
        }
        let h = self.hours.entry(e.ts.div_euclid(HOUR) * HOUR).or_default();
        h.0.insert(e.user.clone());
        if e.click {
            h.1 += 1;
        } else {
            h.2 += 1;
        }
    }

    /// Over the hours `[from, to)`: distinct users, clicks, impressions.
    fn span(&self, from: i64, to: i64) -> [u64; 3] {
        let mut users: HashSet<&String> = HashSet::new();
        let (mut c, mut i) = (0, 0);
        for (u, hc, hi) in self.hours.range(from..to).map(|(_, h)| h) {
            users.extend(u);
            c += hc;
            i += hi;
        }
        [users.len() as u64, c, i]
    }

    fn body(&self, hour: i64) -> String {
        let (u, c, i) = self
            .hours
            .get(&hour)
            .map(|(u, c, i)| (u.len(), *c, *i))
            .unwrap_or_default();
        format!("unique_users,{u}\nclicks,{c}\nimpressions,{i}\n")
    }
}

struct Sender {
    client: Client,
    truth: Truth,
    singles: u64,
    batches: u64,
}

impl Sender {
    async fn single(&mut self, e: &Ev) -> Result<()> {
        let r = self.client.request("POST", &e.target(), &[]).await?;
        ensure!(
            r.status == 204,
            "POST {}: {} {}",
            e.target(),
            r.status,
            r.body
        );
        self.truth.acknowledged(e);
        self.singles += 1;
        Ok(())
    }

    /// One batch, sent in turn as NDJSON, gzip, deflate and as a beacon would (`text/plain`).
    async fn batch(&mut self, events: &[Ev]) -> Result<()> {
        let body: String = events.iter().map(|e| e.line() + "\n").collect();
        let (content_type, coding, sent) = match self.batches % 4 {
            0 => ("application/x-ndjson", None, body.into_bytes()),
            1 => ("application/x-ndjson", Some("gzip"), gzip(body.as_bytes())),
            2 => (
                "application/x-ndjson; charset=utf-8",
                Some("deflate"),
                zlib(body.as_bytes()),
            ),
            _ => ("text/plain;charset=UTF-8", None, body.into_bytes()),
        };
        let mut headers = vec![("Content-Type", content_type)];
        headers.extend(coding.map(|c| ("Content-Encoding", c)));
        let r = self
            .client
            .request_with_body("POST", "/analytics/batch", &headers, &sent)
            .await?;
        ensure!(
            r.status == 200,
            "batch ({content_type}, {coding:?}): {} {}",
            r.status,
            r.body
        );
        let v: serde_json::Value = serde_json::from_str(&r.body)?;
        ensure!(v["accepted"] == events.len(), "{}", r.body);
        ensure!(r.header("content-type") == Some("application/json"));
        for e in events {
            self.truth.acknowledged(e);
        }
        self.batches += 1;
        Ok(())
    }

    /// Half the events one by one, half in batches of 25.
    async fn send(&mut self, events: &[Ev]) -> Result<()> {
        let (singles, batched) = events.split_at(events.len() / 2);
        for e in singles {
            self.single(e).await?;
        }
        for chunk in batched.chunks(25) {
            self.batch(chunk).await?;
        }
        Ok(())
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(raw).expect("in memory");
    e.finish().expect("in memory")
}

fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(raw).expect("in memory");
    e.finish().expect("in memory")
}

fn events(rng: &mut loadgen::truth::Rng, run: &str, from: usize, n: usize, now: i64) -> Vec<Ev> {
    (from..from + n)
        .map(|i| {
            // 70% in the current hour, the rest up to 20 hours late.
            let back = if rng.below(10) < 7 {
                0
            } else {
                1 + rng.below(20) as i64
            };
            Ev {
                ts: now - back * HOUR - rng.below(1000) as i64,
                user: format!("{run}-u{}", rng.below(40)),
                click: rng.below(3) == 0,
                id: (rng.below(10) < 6).then(|| format!("ev-{i}")),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_ids_count_once_through_batches_crashes_and_rebalances() -> Result<()> {
    let stack = Stack::start()?;
    let mut pipeline = Pipeline::start(&stack, PipelineOptions::processors(2)).await?;
    let Pipeline {
        command,
        processor: p1,
        more_processors,
        query,
        ..
    } = &mut pipeline;
    let p2 = more_processors.first().context("a second processor")?;
    let c = command.addr();

    let now = analytics_model::clock::now_ms();
    let run = format!("w{}", now % 1_000_000);
    let mut rng = loadgen::truth::Rng::seeded(now as u64);
    let mut s = Sender {
        client: Client::connect(&c).await?,
        truth: Truth::default(),
        singles: 0,
        batches: 0,
    };

    // Phase A, then re-sends: single events with ids again, and two whole batches again
    // (their id-less events count twice, their ids once).
    let a = events(&mut rng, &run, 0, 300, now);
    s.send(&a).await?;
    let with_ids: Vec<Ev> = a.iter().filter(|e| e.id.is_some()).cloned().collect();
    for e in with_ids.iter().step_by(3) {
        s.single(e).await?;
    }
    let batched = &a[150..];
    s.batch(&batched[..25]).await?;
    s.batch(&batched[50..75]).await?;

    // A processor crashes; re-sends and new events while its partitions move.
    p1.proc.kill9();
    let b = events(&mut rng, &run, 300, 200, now);
    s.send(&b).await?;
    for e in with_ids.iter().skip(1).step_by(4) {
        s.single(e).await?;
    }
    s.batch(&b[100..125]).await?;

    // A new instance joins (a rebalance); more re-sends and new events.
    let p3 = stack.service("processor", PROCESSOR_ARGS)?;
    p3.wait_ready(Duration::from_secs(60)).await?;
    let c2 = events(&mut rng, &run, 500, 100, now);
    s.send(&c2).await?;
    for e in b.iter().filter(|e| e.id.is_some()).step_by(2) {
        s.single(e).await?;
    }
    s.batch(&a[200..225]).await?;

    // Refused batches change nothing: an invalid line, too many events, the wrong type, a
    // coding the command does not know, a corrupt stream, and a valid line followed by a
    // body that inflates past --max-body-bytes (4 MiB) from a few kilobytes.
    let poison = Ev {
        ts: now,
        user: format!("{run}-poison"),
        click: true,
        id: None,
    };
    let mut client = Client::connect(&c).await?;
    let bad = format!(
        "{}\n{{\"timestamp\":{now},\"user\":\"x\"}}\n\n{}\n",
        poison.line(),
        "nope"
    );
    let r = client.post_batch(bad.as_bytes()).await?;
    ensure!(r.status == 400, "{} {}", r.status, r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body)?;
    let lines: Vec<u64> = v["errors"]
        .as_array()
        .context("errors")?
        .iter()
        .map(|e| e["line"].as_u64().unwrap_or(0))
        .collect();
    ensure!(lines == [2, 4], "{}", r.body);
    let many: String = std::iter::repeat_n(poison.line() + "\n", 10_001).collect();
    let r = client.post_batch(many.as_bytes()).await?;
    ensure!(r.status == 413, "{} {}", r.status, r.body);
    let valid = poison.line() + "\n";
    let bomb = gzip(&[valid.as_bytes(), &vec![b'\n'; 5 << 20]].concat());
    let truncated = gzip(valid.as_bytes());
    let refusals: [(&str, Option<&str>, &[u8], u16); 5] = [
        ("application/json", None, valid.as_bytes(), 415),
        ("application/x-ndjson", Some("br"), valid.as_bytes(), 415),
        (
            "application/x-ndjson",
            Some("gzip"),
            &truncated[..truncated.len() - 3],
            400,
        ),
        ("text/plain", Some("deflate"), valid.as_bytes(), 400),
        ("application/x-ndjson", Some("gzip"), &bomb, 413),
    ];
    for (content_type, coding, sent, status) in refusals {
        let mut headers = vec![("Content-Type", content_type)];
        headers.extend(coding.map(|c| ("Content-Encoding", c)));
        let mut client = Client::connect(&c).await?;
        let r = client
            .request_with_body("POST", "/analytics/batch", &headers, sent)
            .await?;
        ensure!(
            r.status == status,
            "{content_type} {coding:?}: {} {} (wanted {status})",
            r.status,
            r.body
        );
    }

    // Every hour exact.
    let hours: Vec<i64> = s.truth.hours.keys().copied().collect();
    ensure!(hours.len() >= 10, "only {} hours touched", hours.len());
    let q = query.addr();
    let truth = &s.truth;
    e2e::workload::wait_until(
        &q,
        &hours,
        Duration::from_secs(90),
        "write API",
        |h, got| {
            let want = loadgen::truth::parse_body(&truth.body(h));
            if got == want {
                Ok(())
            } else {
                Err(format!("got {got:?} want {want:?}"))
            }
        },
    )
    .await?;
    // Distinct users over the whole run, each UTC day and each hour: exact.
    e2e::workload::wait_totals(
        &q,
        &e2e::workload::total_spans(&hours),
        Duration::from_secs(60),
        "write API totals",
        |(from, to), got| {
            let want = truth.span(from, to);
            match got == want {
                true => Ok(()),
                false => Err(format!("got {got:?} want {want:?}")),
            }
        },
    )
    .await?;
    let dups = e2e::metric(&p2.addr(), "analytics_processor_duplicate_events_total").await?
        + e2e::metric(&p3.addr(), "analytics_processor_duplicate_events_total").await?;
    ensure!(
        dups > 0.0,
        "no duplicate was ever dropped by the live processors"
    );
    println!(
        "{} singles and {} batches acknowledged, {} (user, id) pairs, {} hours exact, {dups} duplicates dropped after the crash",
        s.singles,
        s.batches,
        s.truth.pairs.len(),
        hours.len()
    );
    Ok(())
}
