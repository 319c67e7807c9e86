//! The guest SDK of export-service plugins.
//!
//! Implement [`Plugin`] (who you are, how to start a session) and [`Session`] (what to do with
//! each chunk and at the end), then call [`export_plugin!`]. The SDK hides the WIT bindings,
//! the resource handles and the error plumbing.
//!
//! ```ignore
//! struct Upper;
//! impl export_plugin_sdk::Plugin for Upper { … }
//! export_plugin_sdk::export_plugin!(Upper);
//! ```
//!
//! A plugin that only checks records implements [`RecordValidator`] instead and calls
//! [`export_validator!`]: the SDK reads the upload into records, whatever its format, and passes
//! the data on unchanged (the service converts it to the export's format afterwards).

mod hand_over;
mod validator;

use std::borrow::Cow;

pub use serde_json;
pub use validator::{RecordValidator, ValidatorPlugin, ValidatorSession, validator_info};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "export_plugin_sdk::bindings",
    });
}

pub use bindings::export_service::plugin::host::LogLevel;
pub use bindings::export_service::plugin::types::{
    Capabilities, DataFormat, PluginError, PluginInfo, ResourceInfo, SessionOptions, Violation,
};
#[doc(hidden)]
pub use hand_over::{finish_session, push_session};

/// Writes a line to the service's log.
pub fn log(level: LogLevel, message: &str) {
    bindings::export_service::plugin::host::log(level, message);
}

/// A plugin: describes itself and opens one [`Session`] per upload.
pub trait Plugin {
    /// The session type.
    type Session: Session + 'static;

    /// Name, version, resources (with optional JSON Schemas) and capabilities.
    fn describe() -> PluginInfo;

    /// Starts processing one upload.
    fn open(options: SessionOptions) -> Result<Self::Session, PluginError>;
}

/// The processing of one upload.
pub trait Session {
    /// Processes the next chunk (at most 1 MiB). The output may borrow from the session (a
    /// buffer it reuses for every chunk) or from the chunk itself (data passed on unchanged): the
    /// SDK hands it to the host without copying it.
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> Result<StepOutput<'a>, PluginError>;

    /// Ends the upload.
    fn finish(&mut self) -> Result<StepOutput<'_>, PluginError>;
}

/// What a step produced: the bytes to append to the output (in the output format) and the
/// problems found in the data.
#[derive(Debug, Clone, Default)]
pub struct StepOutput<'a> {
    /// The output bytes: borrowed (from the session or the chunk) or owned.
    pub output: Cow<'a, [u8]>,
    /// Problems found; any violation rejects the upload when it ends.
    pub violations: Vec<Violation>,
}

impl StepOutput<'static> {
    /// Owned output bytes and no violations.
    pub fn bytes(output: Vec<u8>) -> Self {
        Self {
            output: Cow::Owned(output),
            violations: Vec::new(),
        }
    }

    /// No output and no violations.
    pub fn nothing() -> Self {
        Self::default()
    }
}

impl<'a> StepOutput<'a> {
    /// Borrowed output bytes (no copy) and no violations.
    pub fn borrowed(output: &'a [u8]) -> Self {
        Self {
            output: Cow::Borrowed(output),
            violations: Vec::new(),
        }
    }
}

impl Violation {
    /// A violation of `row` (and `field`), for a person to read.
    pub fn new(row: Option<u64>, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            row,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as the component's `processor`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __ExportedPlugin;

        #[doc(hidden)]
        pub struct __ExportedSession(::core::cell::RefCell<<$plugin as $crate::Plugin>::Session>);

        impl $crate::bindings::exports::export_service::plugin::processor::Guest for __ExportedPlugin {
            type Session = __ExportedSession;

            fn describe() -> $crate::PluginInfo {
                <$plugin as $crate::Plugin>::describe()
            }
        }

        impl $crate::bindings::exports::export_service::plugin::processor::GuestSession for __ExportedSession {
            fn open(
                options: $crate::SessionOptions,
            ) -> ::core::result::Result<
                $crate::bindings::exports::export_service::plugin::processor::Session,
                $crate::PluginError,
            > {
                let session = <$plugin as $crate::Plugin>::open(options)?;
                Ok($crate::bindings::exports::export_service::plugin::processor::Session::new(
                    __ExportedSession(::core::cell::RefCell::new(session)),
                ))
            }

            fn push(
                &self,
                chunk: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<
                $crate::bindings::export_service::plugin::types::StepOutput,
                $crate::PluginError,
            > {
                $crate::push_session(&mut *self.0.borrow_mut(), chunk)
            }

            fn finish(
                &self,
            ) -> ::core::result::Result<
                $crate::bindings::export_service::plugin::types::StepOutput,
                $crate::PluginError,
            > {
                $crate::finish_session(&mut *self.0.borrow_mut())
            }
        }

        $crate::bindings::export_bindings!(__ExportedPlugin with_types_in $crate::bindings);
    };
}

/// A plugin named `name` at `version` that handles every resource with `capabilities`.
pub fn info_for_every_resource(
    name: &str,
    version: &str,
    capabilities: Capabilities,
) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: version.into(),
        resources: vec![ResourceInfo {
            name: "*".into(),
            schema: None,
        }],
        capabilities,
    }
}

/// What a chunk-by-chunk transform plugin says about itself: its crate's name and version, every
/// resource, `transform` capability.
pub fn transform_info(name: &str, version: &str) -> PluginInfo {
    info_for_every_resource(
        name,
        version,
        Capabilities {
            validate: false,
            transform: true,
            convert: false,
        },
    )
}

/// Exports a stateless plugin made of one function
/// `fn(&[u8]) -> Result<StepOutput<'_>, PluginError>` applied to every chunk (named and versioned
/// after its crate).
#[macro_export]
macro_rules! export_transform {
    ($transform:path) => {
        #[doc(hidden)]
        pub struct __Transform;

        #[doc(hidden)]
        pub struct __TransformSession;

        impl $crate::Plugin for __Transform {
            type Session = __TransformSession;

            fn describe() -> $crate::PluginInfo {
                $crate::transform_info(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            }

            fn open(
                _options: $crate::SessionOptions,
            ) -> ::core::result::Result<__TransformSession, $crate::PluginError> {
                Ok(__TransformSession)
            }
        }

        impl $crate::Session for __TransformSession {
            fn push<'a>(
                &'a mut self,
                chunk: &'a [u8],
            ) -> ::core::result::Result<$crate::StepOutput<'a>, $crate::PluginError> {
                $transform(chunk)
            }

            fn finish(
                &mut self,
            ) -> ::core::result::Result<$crate::StepOutput<'_>, $crate::PluginError> {
                Ok($crate::StepOutput::nothing())
            }
        }

        $crate::export_plugin!(__Transform);
    };
}

/// Exports a [`RecordValidator`] as the component's `processor`.
#[macro_export]
macro_rules! export_validator {
    ($validator:ty) => {
        $crate::export_plugin!($crate::ValidatorPlugin<$validator>);
    };
}
