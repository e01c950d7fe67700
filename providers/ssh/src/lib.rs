//! berth's SSH transport (being written).
