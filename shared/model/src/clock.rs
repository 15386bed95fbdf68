//! Wall-clock time in milliseconds since the Unix epoch.

/// Now, in milliseconds since the epoch (UTC).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Now, as an instant.
pub fn now() -> crate::hour::Millis {
    crate::hour::Millis(now_ms())
}
