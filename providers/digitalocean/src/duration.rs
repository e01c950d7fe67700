//! Go-style duration strings (`"10m"`, `"1m30s"`), parsed by the shared
//! parser in `berth_provider::duration`.

pub(crate) use berth_provider::duration::parse as parse_duration;
