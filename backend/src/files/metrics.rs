//! The files service's counters (Prometheus, through the `metrics` facade).

pub const UPLOADS_CREATED: &str = "ringchat_files_uploads_created_total";
pub const UPLOADS_COMPLETED: &str = "ringchat_files_uploads_completed_total";
pub const UPLOADS_REFUSED: &str = "ringchat_files_requests_refused_total";
pub const UPLOADS_EXPIRED: &str = "ringchat_files_uploads_expired_total";
pub const BYTES_IN: &str = "ringchat_files_bytes_in_total";
pub const BYTES_OUT: &str = "ringchat_files_bytes_out_total";

pub fn describe() {
    metrics::describe_counter!(UPLOADS_CREATED, "Uploads created (POST /files).");
    metrics::describe_counter!(
        UPLOADS_COMPLETED,
        "Uploads completed into files (their bytes durable)."
    );
    metrics::describe_counter!(
        UPLOADS_REFUSED,
        "File requests refused, by reason (the error code the client got)."
    );
    metrics::describe_counter!(
        UPLOADS_EXPIRED,
        "Uploads removed by the cleanup after their lifetime."
    );
    metrics::describe_counter!(BYTES_IN, "Chunk bytes stored.");
    metrics::describe_counter!(BYTES_OUT, "File bytes sent to downloads.");
}
