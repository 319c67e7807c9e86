//! Listing a tenant's exports: query-string parsing (filters, sort, direction, pagination) and
//! the pagination links of the response (contract §5.2, without its negative offsets).

use chrono::{DateTime, NaiveDate, Utc};

use super::ExportStatus;

/// Page size when the request names none.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page the service returns; larger requested limits are lowered to it.
pub const MAX_LIMIT: i64 = 1000;

/// The column a list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The export's name.
    Name,
    /// Creation time (the default).
    CreatedAt,
    /// Expiry time.
    ExpiresAt,
    /// The (alphabetically first) application among the export's sources.
    Application,
    /// The (alphabetically first) resource among the export's sources.
    Resource,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending (the default).
    Asc,
    /// Descending.
    Desc,
}

/// A 24-hour window starting at a given instant; matches timestamps in `[start, start + 24h]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayWindow {
    /// Start of the window.
    pub start: DateTime<Utc>,
}

impl DayWindow {
    /// Inclusive end of the window.
    pub fn end(&self) -> DateTime<Utc> {
        self.start
            .checked_add_signed(chrono::Duration::hours(24))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Filters of a list request; all optional and combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilters {
    /// Exact name.
    pub name: Option<String>,
    /// Exact status.
    pub status: Option<ExportStatus>,
    /// Created within this window.
    pub created_at: Option<DayWindow>,
    /// Expiring within this window.
    pub expires_at: Option<DayWindow>,
    /// Some source has this application (and `resource`, when both are given).
    pub application: Option<String>,
    /// Some source has this resource (and `application`, when both are given).
    pub resource: Option<String>,
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// What to match.
    pub filters: ListFilters,
    /// Order.
    pub sort: SortKey,
    /// Direction.
    pub direction: Direction,
    /// Rows to skip.
    pub offset: i64,
    /// Rows to return (already capped at [`MAX_LIMIT`]).
    pub limit: i64,
}

/// A list query parameter the service cannot use. The `Display` text is the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub String);

/// Parses the query parameters of `GET /exports`. Only the first value of a repeated parameter
/// counts; unknown parameters are ignored. Pagination parameters are checked first, in the
/// upstream's order (limit, offset, sort, dir), then the filters.
pub fn parse_list_query(pairs: &[(String, String)]) -> Result<ListQuery, ListError> {
    if pairs.iter().any(|(_, value)| value.contains('\0')) {
        return Err(ListError(
            "query parameters must not contain NUL characters".into(),
        ));
    }
    // An empty value counts as absent, as upstream.
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => non_negative("limit", text)?.min(MAX_LIMIT),
    };
    let offset = match get("offset") {
        None => 0,
        Some(text) => non_negative("offset", text)?,
    };
    let sort = match get("sort") {
        None => SortKey::CreatedAt,
        Some("name") => SortKey::Name,
        Some("created_at" | "created") => SortKey::CreatedAt,
        Some("expires_at" | "expires") => SortKey::ExpiresAt,
        Some("application") => SortKey::Application,
        Some("resource") => SortKey::Resource,
        Some(other) => {
            return Err(ListError(format!(
                "invalid sort '{other}': must be one of name, created_at, expires_at, application, resource"
            )));
        }
    };
    let direction = match get("dir") {
        None | Some("asc") => Direction::Asc,
        Some("desc") => Direction::Desc,
        Some(other) => {
            return Err(ListError(format!(
                "invalid dir '{other}': must be asc or desc"
            )));
        }
    };
    let filters = ListFilters {
        name: get("name").map(str::to_owned),
        created_at: get("created_at").map(parse_day_window).transpose()?,
        expires_at: get("expires_at").map(parse_day_window).transpose()?,
        status: get("status")
            .map(|text| {
                text.parse().map_err(|_| {
                    ListError(format!(
                        "invalid status '{text}': must be one of pending, running, partial, complete, failed"
                    ))
                })
            })
            .transpose()?,
        application: get("application").map(str::to_owned),
        resource: get("resource").map(str::to_owned),
    };
    Ok(ListQuery {
        filters,
        sort,
        direction,
        offset,
        limit,
    })
}

fn non_negative(name: &str, text: &str) -> Result<i64, ListError> {
    text.parse::<i64>()
        .ok()
        .filter(|value| *value >= 0)
        .ok_or_else(|| {
            ListError(format!(
                "invalid {name} '{text}': must be a non-negative integer"
            ))
        })
}

/// `YYYY-MM-DD` (UTC midnight) or an RFC 3339 timestamp.
fn parse_day_window(text: &str) -> Result<DayWindow, ListError> {
    let start = if text.len() == 10 {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|midnight| midnight.and_utc())
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|timestamp| timestamp.with_timezone(&Utc))
    };
    start
        .map(|start| DayWindow { start })
        .ok_or_else(|| ListError(format!("'{text}' is not a valid date in ISO 8601")))
}

/// Links to other pages of a list: relative URLs with the request's own parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLinks {
    /// The first page.
    pub first: String,
    /// The next page, if there is one.
    pub next: Option<String>,
    /// The previous page, if there is one.
    pub previous: Option<String>,
    /// The last page: offset `count - limit`, never negative.
    pub last: String,
}

/// Builds the pagination links. Each link is `path` plus the request's query parameters with
/// `offset` and `limit` replaced, re-encoded with keys in alphabetical order.
pub fn page_links(
    path: &str,
    pairs: &[(String, String)],
    offset: i64,
    limit: i64,
    count: i64,
) -> PageLinks {
    let link = |link_offset: i64| {
        let mut params: Vec<(&str, String)> = pairs
            .iter()
            .filter(|(key, _)| key != "offset" && key != "limit")
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        params.push(("limit", limit.to_string()));
        params.push(("offset", link_offset.to_string()));
        params.sort_by(|left, right| left.0.cmp(right.0));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("{path}?{query}")
    };
    let first = link(0);
    if limit == 0 || (count <= limit && offset == 0) {
        return PageLinks {
            last: first.clone(),
            first,
            next: None,
            previous: None,
        };
    }
    let next_offset = offset.saturating_add(limit);
    PageLinks {
        next: (next_offset < count).then(|| link(next_offset)),
        previous: (offset > 0 && offset < count).then(|| link((offset - limit).max(0))),
        last: link((count - limit).max(0)),
        first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pairs(query: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    fn parse(query: &str) -> Result<ListQuery, ListError> {
        parse_list_query(&pairs(query))
    }

    #[test]
    fn defaults() {
        let query = parse("").unwrap();
        assert_eq!(
            (query.offset, query.limit, query.sort, query.direction),
            (0, 100, SortKey::CreatedAt, Direction::Asc)
        );
        assert_eq!(query.filters, ListFilters::default());
    }

    #[test]
    fn sort_names_from_spec_and_code() {
        for (text, key) in [
            ("name", SortKey::Name),
            ("created", SortKey::CreatedAt),
            ("created_at", SortKey::CreatedAt),
            ("expires", SortKey::ExpiresAt),
            ("expires_at", SortKey::ExpiresAt),
            ("application", SortKey::Application),
            ("resource", SortKey::Resource),
        ] {
            assert_eq!(parse(&format!("sort={text}")).unwrap().sort, key);
        }
        assert_eq!(parse("dir=desc").unwrap().direction, Direction::Desc);
    }

    #[test]
    fn pagination_errors_come_first_in_upstream_order() {
        assert!(
            parse("limit=x&offset=-1")
                .unwrap_err()
                .0
                .starts_with("invalid limit 'x'")
        );
        assert!(
            parse("offset=-1&sort=bad")
                .unwrap_err()
                .0
                .starts_with("invalid offset '-1'")
        );
        assert!(
            parse("sort=bad&dir=up")
                .unwrap_err()
                .0
                .starts_with("invalid sort 'bad'")
        );
        assert!(
            parse("dir=up&created_at=x")
                .unwrap_err()
                .0
                .starts_with("invalid dir 'up'")
        );
        assert_eq!(
            parse("created_at=yesterday").unwrap_err().0,
            "'yesterday' is not a valid date in ISO 8601"
        );
        assert!(
            parse("status=done")
                .unwrap_err()
                .0
                .starts_with("invalid status")
        );
        assert!(parse("limit=1.5").is_err());
    }

    #[test]
    fn empty_values_count_as_absent_and_nul_is_refused() {
        let query =
            parse("limit=&offset=&sort=&dir=&status=&created_at=&name=&application=").unwrap();
        assert_eq!(query.limit, DEFAULT_LIMIT);
        assert_eq!(query.sort, SortKey::CreatedAt);
        assert_eq!(query.filters, ListFilters::default());
        assert!(parse("name=a%00b").is_err());
    }

    #[test]
    fn limit_is_capped_and_zero_allowed() {
        assert_eq!(parse("limit=5000").unwrap().limit, MAX_LIMIT);
        assert_eq!(parse("limit=0").unwrap().limit, 0);
    }

    #[test]
    fn dates() {
        let query = parse("created_at=2024-05-01&expires_at=2024-05-02T10:00:00Z").unwrap();
        assert_eq!(
            query.filters.created_at.unwrap().start,
            Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
        );
        let expires = query.filters.expires_at.unwrap();
        assert_eq!(
            expires.end(),
            Utc.with_ymd_and_hms(2024, 5, 3, 10, 0, 0).unwrap()
        );
        assert!(parse("created_at=2024-13-01").is_err());
    }

    #[test]
    fn links_keep_params_sorted_and_never_go_negative() {
        let params = pairs("sort=name&dir=desc&limit=10&offset=20&name=a b");
        let links = page_links("/api/export/v1/exports", &params, 20, 10, 45);
        assert_eq!(
            links.first,
            "/api/export/v1/exports?dir=desc&limit=10&name=a+b&offset=0&sort=name"
        );
        assert_eq!(
            links.next.as_deref(),
            Some("/api/export/v1/exports?dir=desc&limit=10&name=a+b&offset=30&sort=name")
        );
        assert_eq!(
            links.previous.as_deref(),
            Some("/api/export/v1/exports?dir=desc&limit=10&name=a+b&offset=10&sort=name")
        );
        assert_eq!(
            links.last,
            "/api/export/v1/exports?dir=desc&limit=10&name=a+b&offset=35&sort=name"
        );

        let single = page_links("/e", &[], 0, 100, 3);
        assert_eq!(single.first, "/e?limit=100&offset=0");
        assert_eq!((single.next, single.previous), (None, None));
        assert_eq!(single.last, single.first);

        // count 5, limit 10, offset 2: upstream says last offset=-5.
        let short = page_links("/e", &[], 2, 10, 5);
        assert_eq!(short.last, "/e?limit=10&offset=0");
        assert_eq!(short.previous.as_deref(), Some("/e?limit=10&offset=0"));
        assert_eq!(short.next, None);

        // Beyond the end: no previous, last is the real last page.
        let beyond = page_links("/e", &[], 50, 10, 0);
        assert_eq!((beyond.next, beyond.previous), (None, None));
        assert_eq!(beyond.last, "/e?limit=10&offset=0");

        let empty_page = page_links("/e", &[], 0, 0, 7);
        assert_eq!((empty_page.next, empty_page.previous), (None, None));
    }
}
