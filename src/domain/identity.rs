//! The `x-rh-identity` header: base64-encoded JSON describing who is calling. Parsing follows
//! the upstream's two steps (the platform library's checks, then the export service's own user
//! checks), but every failure carries a message that says what is wrong.

use base64::Engine as _;
use serde::Deserialize;

use super::secret::Secret;
use super::{IdentityKind, Owner};

/// Why an identity header was refused. The `Display` text is the message the client receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The header is absent or empty.
    #[error("missing x-rh-identity header")]
    Missing,
    /// The header is not standard, padded base64.
    #[error("unable to b64 decode x-rh-identity header")]
    NotBase64,
    /// The decoded bytes are not JSON of the identity shape.
    #[error("x-rh-identity header does not contain valid JSON: {0}")]
    NotJson(String),
    /// Neither `identity.org_id` nor `identity.internal.org_id` is set.
    #[error("x-rh-identity header has an invalid or missing org_id")]
    MissingOrgId,
    /// `identity.type` is empty.
    #[error("x-rh-identity header is missing type")]
    MissingType,
    /// The type is not one that can own exports.
    #[error(
        "invalid identity header: identity type '{0}' cannot use exports (expected User, ServiceAccount or System)"
    )]
    UnsupportedType(String),
    /// A field holds a NUL character, which no stored value may contain.
    #[error("x-rh-identity header contains a NUL character")]
    NulCharacter,
    /// The object that carries the caller's name is missing or has no name.
    #[error("invalid identity header: {0}")]
    MissingName(&'static str),
}

/// A caller authenticated by the platform gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The owner (org, account, identity kind and name) that scopes every export the caller
    /// can see.
    pub owner: Owner,
    /// The header exactly as received; forwarded to source applications, never logged.
    pub header: Secret<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    identity: Body,
}

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    account_number: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    internal: Option<Internal>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    user: Option<Named>,
    #[serde(default)]
    service_account: Option<Named>,
    #[serde(default)]
    system: Option<System>,
}

#[derive(Deserialize)]
struct Internal {
    #[serde(default)]
    org_id: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct System {
    #[serde(default)]
    cn: Option<String>,
}

impl Identity {
    /// Parses the raw header value (`None` when the request has no such header).
    pub fn from_header(header: Option<&str>) -> Result<Self, IdentityError> {
        let header = header.map(str::trim).unwrap_or_default();
        if header.is_empty() {
            return Err(IdentityError::Missing);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header)
            .map_err(|_| IdentityError::NotBase64)?;
        let envelope: Envelope = serde_json::from_slice(&decoded)
            .map_err(|error| IdentityError::NotJson(error.to_string()))?;
        let body = envelope.identity;

        let org_id = non_empty(body.org_id)
            .or_else(|| {
                body.internal
                    .and_then(|internal| non_empty(internal.org_id))
            })
            .ok_or(IdentityError::MissingOrgId)?;
        let kind_text = non_empty(body.kind).ok_or(IdentityError::MissingType)?;
        let (kind, username) = match kind_text.to_ascii_lowercase().as_str() {
            "user" => {
                let user = body.user.ok_or(IdentityError::MissingName(
                    "User identity has no 'user' object",
                ))?;
                let name = non_empty(user.username).ok_or(IdentityError::MissingName(
                    "User identity has no user.username",
                ))?;
                (IdentityKind::User, name)
            }
            "serviceaccount" => {
                let account = body.service_account.ok_or(IdentityError::MissingName(
                    "ServiceAccount identity has no 'service_account' object",
                ))?;
                let name = non_empty(account.username).ok_or(IdentityError::MissingName(
                    "ServiceAccount identity has no service_account.username",
                ))?;
                (IdentityKind::ServiceAccount, name)
            }
            "system" => {
                let system = body.system.ok_or(IdentityError::MissingName(
                    "System identity has no 'system' object",
                ))?;
                let name = non_empty(system.cn).ok_or(IdentityError::MissingName(
                    "System identity has no system.cn",
                ))?;
                (IdentityKind::System, name)
            }
            _ => return Err(IdentityError::UnsupportedType(kind_text)),
        };
        let owner = Owner {
            org_id: org_id.into(),
            account_id: body.account_number.unwrap_or_default(),
            kind,
            username,
        };
        if [owner.org_id.as_str(), &owner.account_id, &owner.username]
            .iter()
            .any(|field| field.contains('\0'))
        {
            return Err(IdentityError::NulCharacter);
        }
        Ok(Self {
            header: Secret::new(header.to_owned()),
            owner,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode(value: &serde_json::Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(value.to_string())
    }

    fn parse(value: serde_json::Value) -> Result<Identity, IdentityError> {
        Identity::from_header(Some(&encode(&value)))
    }

    #[test]
    fn user_service_account_and_system() {
        let user = parse(json!({"identity": {"account_number": "a1", "org_id": "o1", "type": "User", "user": {"username": "alice"}}})).unwrap();
        assert_eq!(
            user.owner,
            Owner {
                org_id: "o1".into(),
                account_id: "a1".into(),
                kind: IdentityKind::User,
                username: "alice".into()
            }
        );

        let account = parse(json!({"identity": {"org_id": "o1", "type": "ServiceAccount", "service_account": {"client_id": "c", "username": "svc"}}})).unwrap();
        assert_eq!(account.owner.kind, IdentityKind::ServiceAccount);
        assert_eq!(account.owner.username, "svc");
        assert_eq!(account.owner.account_id, "");

        let system = parse(
            json!({"identity": {"org_id": "o1", "type": "system", "system": {"cn": "host-1"}}}),
        )
        .unwrap();
        assert_eq!(system.owner.kind, IdentityKind::System);
        assert_eq!(system.owner.username, "host-1");
    }

    #[test]
    fn a_system_cn_and_a_username_are_different_owners() {
        let user = parse(
            json!({"identity": {"org_id": "o1", "type": "User", "user": {"username": "alice"}}}),
        )
        .unwrap();
        let system = parse(
            json!({"identity": {"org_id": "o1", "type": "System", "system": {"cn": "alice"}}}),
        )
        .unwrap();
        let account = parse(json!({"identity": {"org_id": "o1", "type": "ServiceAccount", "service_account": {"username": "alice"}}})).unwrap();
        assert_ne!(user.owner, system.owner);
        assert_ne!(user.owner, account.owner);
        assert_ne!(system.owner, account.owner);
    }

    #[test]
    fn kinds_round_trip_through_their_stored_form() {
        for kind in [
            IdentityKind::User,
            IdentityKind::ServiceAccount,
            IdentityKind::System,
        ] {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        // The stored form is exact; the header's case-insensitive type never reaches it.
        assert_eq!("system".parse::<IdentityKind>(), Err(()));
        assert_eq!("Associate".parse::<IdentityKind>(), Err(()));
    }

    #[test]
    fn org_falls_back_to_internal() {
        let identity = parse(json!({"identity": {"type": "User", "internal": {"org_id": "o9"}, "user": {"username": "u"}}})).unwrap();
        assert_eq!(identity.owner.org_id.as_str(), "o9");
    }

    #[test]
    fn every_malformed_case_has_its_message() {
        assert_eq!(Identity::from_header(None), Err(IdentityError::Missing));
        assert_eq!(
            Identity::from_header(Some("  ")),
            Err(IdentityError::Missing)
        );
        assert_eq!(
            Identity::from_header(Some("not base64!")),
            Err(IdentityError::NotBase64)
        );
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("{\"a\":1}");
        assert_eq!(
            Identity::from_header(Some(&unpadded)),
            Err(IdentityError::NotBase64)
        );
        let not_json = base64::engine::general_purpose::STANDARD.encode("hello");
        assert!(matches!(
            Identity::from_header(Some(&not_json)),
            Err(IdentityError::NotJson(_))
        ));
        assert!(matches!(
            parse(json!({"identity": {"org_id": 5}})),
            Err(IdentityError::NotJson(_))
        ));
        assert_eq!(parse(json!({})), Err(IdentityError::MissingOrgId));
        assert_eq!(
            parse(json!({"identity": {"org_id": "o"}})),
            Err(IdentityError::MissingType)
        );
        assert_eq!(
            parse(json!({"identity": {"org_id": "o", "type": "Associate"}})),
            Err(IdentityError::UnsupportedType("Associate".into()))
        );
        assert!(matches!(
            parse(json!({"identity": {"org_id": "o", "type": "User"}})),
            Err(IdentityError::MissingName(_))
        ));
        assert!(matches!(
            parse(json!({"identity": {"org_id": "o", "type": "User", "user": {"username": ""}}})),
            Err(IdentityError::MissingName(_))
        ));
        assert!(matches!(
            parse(
                json!({"identity": {"org_id": "o", "type": "ServiceAccount", "service_account": {"username": null}}})
            ),
            Err(IdentityError::MissingName(_))
        ));
        assert!(matches!(
            parse(json!({"identity": {"org_id": "o", "type": "System"}})),
            Err(IdentityError::MissingName(_))
        ));
        assert_eq!(
            parse(
                json!({"identity": {"org_id": "o\u{0}", "type": "User", "user": {"username": "u"}}})
            ),
            Err(IdentityError::NulCharacter)
        );
    }
}
