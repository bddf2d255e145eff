//! Host↔agent protocol: messages, framing, ports and `PROTOCOL_VERSION`.
