//! The read model's stores, each written with an offset guard so that replays, duplicates and
//! reordering never move a number backwards.
//!
//! | module | job |
//! | --- | --- |
//! | [`redis_store`] | the per-hour Redis hash and its offset-guarded, never-partial merge; `--redis-url` |
//! | [`membership`] | the users of each (hour, partition) as roaring bitmaps, day unions, the dictionary; `--membership-retention` |
//! | [`pg`] | the PostgreSQL table of partials, its migrations and the guarded upsert; `--postgres-url` |

pub mod membership;
pub mod pg;
pub mod redis_store;
