//! Placeholder: the latency lab proxies are being written.
