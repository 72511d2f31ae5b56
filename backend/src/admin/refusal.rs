//! A service's refusal (the client protocol's error code and message) as an admin API error,
//! so that operators get the same rules, and words, as clients.

use ringchat_proto::v1::ErrorCode as Wire;

use super::error::{ApiError, ErrorCode};
use crate::accounts::Refusal;

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let code = match r.code {
            Wire::InvalidArgument | Wire::MessageTooLarge => ErrorCode::Invalid,
            Wire::UsernameTaken | Wire::EmailTaken | Wire::GroupDissolved => ErrorCode::Conflict,
            Wire::NotFound | Wire::UserNotFound => ErrorCode::NotFound,
            Wire::Forbidden | Wire::NotAllowed => ErrorCode::Forbidden,
            Wire::Unavailable | Wire::RateLimited => {
                return ApiError::unavailable(r.message, r.retry_after_ms.max(1));
            }
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, r.message)
    }
}
