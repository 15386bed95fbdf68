//! The two bodies of `GET /analytics`: the text form (the API's original contract) and the
//! JSON form (`Accept: application/json`).

use analytics_model::event::HourTotals;
use analytics_model::hour::HourStart;
use bytes::Bytes;
use serde::Serialize;

/// `unique_users,N\nclicks,N\nimpressions,N\n`: three lines, each ending in `\n`.
/// Written with `itoa` into a buffer on the stack, then copied once into a slice of the
/// thread's chunk (the hottest answer: [`analytics_http::carve`]; one copy rather than nine
/// appends, each with its own capacity check).
pub fn text(t: &HourTotals) -> Bytes {
    let mut buf = [0u8; TEXT_MAX];
    let mut len = 0;
    let mut n = itoa::Buffer::new();
    for (name, value) in [
        (&b"unique_users,"[..], t.unique_users),
        (&b"clicks,"[..], t.clicks),
        (&b"impressions,"[..], t.impressions),
    ] {
        for part in [name, n.format(value).as_bytes(), b"\n"] {
            buf[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    analytics_http::carve(len, |out| out.extend_from_slice(&buf[..len]))
}

/// The longest text body: the names, three newlines and three 20-digit totals.
const TEXT_MAX: usize = 13 + 7 + 12 + 3 + 3 * 20;

/// One hour in the JSON form.
#[derive(Serialize)]
struct HourJson {
    hour: String,
    unique_users: u64,
    clicks: u64,
    impressions: u64,
}

/// `{"hour":"2023-11-14T22:00:00Z","unique_users":u,"clicks":c,"impressions":i}`.
pub fn json(hour: HourStart, t: &HourTotals) -> String {
    serde_json::to_string(&HourJson {
        hour: hour.rfc3339(),
        unique_users: t.unique_users,
        clicks: t.clicks,
        impressions: t.impressions,
    })
    .expect("strings and integers always serialize")
}

/// The CSV of a range: a header line, then `hour,unique_users,clicks,impressions` per hour.
pub fn csv(hours: &[(HourStart, HourTotals)]) -> String {
    let mut out = String::with_capacity(40 + hours.len() * 40);
    out.push_str("hour,unique_users,clicks,impressions\n");
    for (hour, t) in hours {
        out.push_str(&format!(
            "{},{},{},{}\n",
            hour.rfc3339(),
            t.unique_users,
            t.clicks,
            t.impressions
        ));
    }
    out
}

/// The JSON of a range: an array of the single-hour objects.
pub fn json_array(hours: &[(HourStart, HourTotals)]) -> String {
    let rows: Vec<HourJson> = hours
        .iter()
        .map(|(hour, t)| HourJson {
            hour: hour.rfc3339(),
            unique_users: t.unique_users,
            clicks: t.clicks,
            impressions: t.impressions,
        })
        .collect();
    serde_json::to_string(&rows).expect("strings and integers always serialize")
}

/// `/analytics/total` as JSON: the bounds in the asked zone, then the totals.
pub fn total_json(from: String, to: String, t: &HourTotals) -> String {
    #[derive(Serialize)]
    struct TotalJson {
        from: String,
        to: String,
        unique_users: u64,
        clicks: u64,
        impressions: u64,
    }
    serde_json::to_string(&TotalJson {
        from,
        to,
        unique_users: t.unique_users,
        clicks: t.clicks,
        impressions: t.impressions,
    })
    .expect("strings and integers always serialize")
}

/// One calendar bucket in the JSON form.
#[derive(Serialize)]
struct BucketJson<'a> {
    /// The bucket's start (the name of the hourly rows' first field).
    hour: &'a str,
    interval: &'a str,
    unique_users: u64,
    clicks: u64,
    impressions: u64,
}

/// Rows of a zone's calendar (`interval`, `tz`), each its start in the zone's RFC 3339:
/// a CSV with the hourly range's header, `hour,unique_users,clicks,impressions`.
pub fn buckets_csv(rows: &[(String, HourTotals)]) -> String {
    let mut out = String::with_capacity(40 + rows.len() * 48);
    out.push_str("hour,unique_users,clicks,impressions\n");
    for (start, t) in rows {
        out.push_str(&format!(
            "{start},{},{},{}\n",
            t.unique_users, t.clicks, t.impressions
        ));
    }
    out
}

/// The same rows as a JSON array of the hourly rows' objects with `"interval"`:
/// `{"hour","interval","unique_users","clicks","impressions"}`.
pub fn buckets_json(interval: &str, rows: &[(String, HourTotals)]) -> String {
    let rows: Vec<BucketJson<'_>> = rows
        .iter()
        .map(|(start, t)| BucketJson {
            hour: start,
            interval,
            unique_users: t.unique_users,
            clicks: t.clicks,
            impressions: t.impressions,
        })
        .collect();
    serde_json::to_string(&rows).expect("strings and integers always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: HourTotals = HourTotals {
        unique_users: 12,
        clicks: 6,
        impressions: 9,
    };

    #[test]
    fn text_form() {
        assert_eq!(text(&T), "unique_users,12\nclicks,6\nimpressions,9\n");
        assert_eq!(
            text(&HourTotals::default()),
            "unique_users,0\nclicks,0\nimpressions,0\n"
        );
        let max = HourTotals {
            unique_users: u64::MAX,
            clicks: u64::MAX,
            impressions: u64::MAX,
        };
        let m = u64::MAX;
        assert_eq!(
            text(&max),
            format!("unique_users,{m}\nclicks,{m}\nimpressions,{m}\n")
        );
    }

    fn hour(ms: i64) -> HourStart {
        HourStart::new(ms).unwrap()
    }

    #[test]
    fn range_forms() {
        let rows = [
            (hour(1_699_999_200_000), T),
            (hour(1_700_002_800_000), HourTotals::default()),
        ];
        assert_eq!(
            csv(&rows),
            "hour,unique_users,clicks,impressions\n2023-11-14T22:00:00Z,12,6,9\n2023-11-14T23:00:00Z,0,0,0\n"
        );
        assert_eq!(
            json_array(&rows),
            format!(
                "[{},{}]",
                json(rows[0].0, &rows[0].1),
                json(rows[1].0, &rows[1].1)
            )
        );
    }

    #[test]
    fn total_and_bucket_forms() {
        assert_eq!(
            total_json(
                "2026-12-06T00:00:00+01:00".into(),
                "2026-12-07T00:00:00+01:00".into(),
                &T
            ),
            r#"{"from":"2026-12-06T00:00:00+01:00","to":"2026-12-07T00:00:00+01:00","unique_users":12,"clicks":6,"impressions":9}"#
        );
        let rows = [
            ("2026-12-06T00:00:00+01:00".to_string(), T),
            (
                "2026-12-07T00:00:00+01:00".to_string(),
                HourTotals::default(),
            ),
        ];
        assert_eq!(
            buckets_csv(&rows),
            "hour,unique_users,clicks,impressions\n2026-12-06T00:00:00+01:00,12,6,9\n2026-12-07T00:00:00+01:00,0,0,0\n"
        );
        assert_eq!(
            buckets_json("day", &rows[..1]),
            r#"[{"hour":"2026-12-06T00:00:00+01:00","interval":"day","unique_users":12,"clicks":6,"impressions":9}]"#
        );
    }

    #[test]
    fn json_form() {
        assert_eq!(
            json(hour(1_699_999_200_000), &T),
            r#"{"hour":"2023-11-14T22:00:00Z","unique_users":12,"clicks":6,"impressions":9}"#
        );
    }
}
