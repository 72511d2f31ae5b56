//! The files service's counters (Prometheus, through the `metrics` facade).

pub const UPLOADS_CREATED: &str = "ringchat_files_uploads_created_total";
pub const UPLOADS_COMPLETED: &str = "ringchat_files_uploads_completed_total";
pub const UPLOADS_REFUSED: &str = "ringchat_files_requests_refused_total";
pub const UPLOADS_EXPIRED: &str = "ringchat_files_uploads_expired_total";
pub const BYTES_IN: &str = "ringchat_files_bytes_in_total";
pub const BYTES_OUT: &str = "ringchat_files_bytes_out_total";
pub const FILES_COLLECTED: &str = "ringchat_files_gc_files_collected_total";
pub const BLOBS_COLLECTED: &str = "ringchat_files_gc_blobs_collected_total";
pub const BYTES_COLLECTED: &str = "ringchat_files_gc_bytes_collected_total";
pub const MARKERS_DROPPED: &str = "ringchat_files_gc_markers_dropped_total";

/// The files families' help texts (`admin::describe_families`).
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
    metrics::describe_counter!(
        FILES_COLLECTED,
        "Finished files removed by the collector (no message references them)."
    );
    metrics::describe_counter!(
        BLOBS_COLLECTED,
        "Blobs removed by the collector (no file is made of them)."
    );
    metrics::describe_counter!(BYTES_COLLECTED, "Bytes of the blobs the collector removed.");
    metrics::describe_counter!(
        MARKERS_DROPPED,
        "Reference markers the collector removed (recalled messages, settled sends)."
    );
}
