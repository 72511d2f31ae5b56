//! `GET /api/activity`: users' behaviour over time (daily and monthly active users, messages,
//! registrations and logins per UTC day) and the heaviest senders of the last hour, the first
//! place to look for abuse. Everything comes from counters kept as things happen
//! (`observe/activity/`), never from a scan of the message store.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Admin;
use super::auth::Viewer;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::observe::activity::hll::Hll;
use crate::observe::activity::{DAY_MS, Day, MONTH_DAYS};
use crate::time::now_ms;

/// Days shown when the caller does not say.
const DAYS_DEFAULT: u32 = 30;
/// Heaviest senders listed when the caller does not say, and at most.
const TOP_DEFAULT: u32 = 10;
const TOP_MAX: u32 = 100;

pub fn routes() -> OpenApiRouter<Arc<Admin>> {
    OpenApiRouter::new().routes(routes!(activity))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// UTC days in the series, today included: 1 to `observe.activity_days_kept` (default 30).
    pub days: Option<u32>,
    /// Heaviest senders listed: 1 to 100 (default 10).
    pub top: Option<u32>,
}

/// One UTC day. Active users are estimated (HyperLogLog: exact for small numbers, about
/// 0.8 % off for large ones).
#[derive(Debug, Serialize, ToSchema)]
pub struct DayActivity {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub day_start_ms: u64,
    /// Users who logged in or sent that day.
    pub active_users: u64,
    /// Users active in the 30 days ending that day.
    pub monthly_active_users: u64,
    pub messages: u64,
    pub registrations: u64,
    pub logins: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeavySender {
    pub user_id: u64,
    /// Absent when the account is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Messages in the last hour as counted; may overstate by up to `error`.
    pub messages: u64,
    pub error: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityReply {
    pub daily_active_users: u64,
    pub monthly_active_users: u64,
    /// Oldest first, one per UTC day (days with nothing are zeros).
    pub days: Vec<DayActivity>,
    /// The last hour, heaviest first.
    pub heaviest_senders: Vec<HeavySender>,
}

/// Users' activity over time and the heaviest senders of the last hour.
#[utoipa::path(get, path = "/api/activity", tag = "activity", params(ActivityQuery),
    responses((status = 200, body = ActivityReply), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn activity(
    State(admin): State<Arc<Admin>>,
    Viewer(_op): Viewer,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<ActivityReply>> {
    let kept = admin.backend.settings.observe.activity_days_kept;
    let days = q.days.unwrap_or(DAYS_DEFAULT.min(kept));
    if !(1..=kept).contains(&days) {
        return Err(ApiError::invalid(format!(
            "days must be between 1 and {kept}"
        )));
    }
    let top = q.top.unwrap_or(TOP_DEFAULT);
    if !(1..=TOP_MAX).contains(&top) {
        return Err(ApiError::invalid(format!(
            "top must be between 1 and {TOP_MAX}"
        )));
    }
    let now = now_ms();
    let activity = &admin.backend.observe.activity;
    // Copies share the sketches (reference counts): the merging below runs off the lock.
    let stored = activity.days(days as usize + MONTH_DAYS);
    let heavy = activity.heaviest_senders(now, top as usize);
    let accounts = Arc::clone(&admin.backend.ports.accounts);
    let (series, senders) = tokio::task::spawn_blocking(move || {
        let series = series(&stored, now, days);
        let senders = heavy
            .into_iter()
            .map(|h| {
                Ok(HeavySender {
                    user_id: h.user,
                    username: accounts.user_by_id(h.user)?.map(|u| u.username),
                    messages: h.messages,
                    error: h.error,
                })
            })
            .collect::<Result<Vec<_>, crate::store::StoreError>>();
        (series, senders)
    })
    .await?;
    let today = series.last();
    Ok(Json(ActivityReply {
        daily_active_users: today.map_or(0, |d| d.active_users),
        monthly_active_users: today.map_or(0, |d| d.monthly_active_users),
        days: series,
        heaviest_senders: senders?,
    }))
}

/// The `days` days ending today, from the stored ones (oldest first, possibly with gaps).
fn series(stored: &[Day], now_ms: u64, days: u32) -> Vec<DayActivity> {
    let today = u32::try_from(now_ms / DAY_MS).unwrap_or(u32::MAX);
    let first = today.saturating_sub(days - 1);
    let month = u32::try_from(MONTH_DAYS).expect("small") - 1;
    (first..=today)
        .map(|day| {
            let this = stored.iter().find(|d| d.day == day);
            let mut month_users = Hll::default();
            for d in stored
                .iter()
                .filter(|d| d.day <= day && d.day >= day.saturating_sub(month))
            {
                month_users.merge(&d.users);
            }
            DayActivity {
                date: date(day),
                day_start_ms: u64::from(day) * DAY_MS,
                active_users: this.map_or(0, |d| d.users.estimate()),
                monthly_active_users: month_users.estimate(),
                messages: this.map_or(0, |d| d.messages),
                registrations: this.map_or(0, |d| d.registrations),
                logins: this.map_or(0, |d| d.logins),
            }
        })
        .collect()
}

/// `YYYY-MM-DD` of a day since the epoch (proleptic Gregorian, UTC).
fn date(day: u32) -> String {
    // Howard Hinnant's days-to-civil.
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_gaps() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
        let mut d = Day {
            day: 100,
            messages: 4,
            ..Day::default()
        };
        Arc::make_mut(&mut d.users).insert(1);
        let mut e = Day {
            day: 102,
            ..Day::default()
        };
        Arc::make_mut(&mut e.users).insert(2);
        let s = series(&[d, e], 102 * DAY_MS + 5, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].date, date(99));
        assert_eq!((s[1].messages, s[1].active_users), (4, 1));
        assert_eq!(s[2].active_users, 0);
        assert_eq!(s[2].monthly_active_users, 1);
        assert_eq!(s[3].monthly_active_users, 2);
    }
}
