//! Identifiers as their own types, parsed once at the edge: an export's id cannot be passed
//! where a source's is expected, nor an application where a resource is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a path segment is not the identifier it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a valid {what} UUID")]
pub struct InvalidId {
    /// What was given.
    pub text: String,
    /// What it should have named (`export`, `resource`).
    pub what: &'static str,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID.
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, InvalidId> {
                Uuid::try_parse(text).map(Self).map_err(|_| InvalidId {
                    text: text.to_owned(),
                    what: $what,
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(formatter)
            }
        }
    };
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self(name)
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                Self(name.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> Self {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

uuid_id!(
    /// An export's id.
    ExportId,
    "export"
);
uuid_id!(
    /// A source's id (the upstream calls a source a "resource" in its messages).
    SourceId,
    "resource"
);
name_id!(
    /// A tenant organisation's id (`org_id` of the identity).
    OrgId
);
name_id!(
    /// A source application's name, as the tenant requests it and as it authenticates.
    Application
);
name_id!(
    /// A resource an application exports.
    Resource
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_a_message_that_names_what_was_expected() {
        let uuid = "0b6b6c8e-8a4c-4a0e-9a3c-1f1f1f1f1f1f";
        assert_eq!(uuid.parse::<ExportId>().unwrap().to_string(), uuid);
        let error = "nope".parse::<SourceId>().unwrap_err();
        assert_eq!(error.to_string(), "'nope' is not a valid resource UUID");
        let error = "nope".parse::<ExportId>().unwrap_err();
        assert_eq!(error.to_string(), "'nope' is not a valid export UUID");
    }

    #[test]
    fn names_compare_with_text_and_serialise_as_plain_strings() {
        let application = Application::from("exampleApp");
        assert!(application == *"exampleApp");
        assert_eq!(
            serde_json::to_string(&application).unwrap(),
            "\"exampleApp\""
        );
    }
}
