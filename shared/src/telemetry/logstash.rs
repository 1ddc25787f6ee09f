//! Ships log lines to Logstash over TCP (json_lines), never blocking the caller.
