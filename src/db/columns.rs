//! Domain types as SQL columns. Statuses and formats are bound and read as the text the columns
//! store, so queries do not spell statuses as literals (the one exception, for a partial index,
//! says why) and a row with an unknown status fails to decode instead of passing as text; ids are
//! bound and read as what they wrap.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use uuid::Uuid;

use crate::domain::{
    Application, ExportId, ExportStatus, Format, OrgId, Resource, SourceId, SourceStatus,
};

macro_rules! text_column {
    ($($type:ty),*) => {$(
        impl Type<Postgres> for $type {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(type_info: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(type_info)
            }
        }

        impl Encode<'_, Postgres> for $type {
            fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<'_, Postgres>>::encode_by_ref(&self.as_str(), buffer)
            }
        }

        impl<'row> Decode<'row, Postgres> for $type {
            fn decode(value: PgValueRef<'row>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<'row, Postgres>>::decode(value)?;
                Ok(text.parse::<$type>()?)
            }
        }
    )*};
}

text_column!(ExportStatus, SourceStatus, Format);

/// Columns whose domain type wraps `$inner` and converts both ways.
macro_rules! wrapped_column {
    ($inner:ty => $($type:ty),*) => {$(
        impl Type<Postgres> for $type {
            fn type_info() -> PgTypeInfo {
                <$inner as Type<Postgres>>::type_info()
            }

            fn compatible(type_info: &PgTypeInfo) -> bool {
                <$inner as Type<Postgres>>::compatible(type_info)
            }
        }

        impl Encode<'_, Postgres> for $type {
            fn encode_by_ref(&self, buffer: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <$inner as Encode<'_, Postgres>>::encode(<$inner>::from(self.clone()), buffer)
            }
        }

        impl<'row> Decode<'row, Postgres> for $type {
            fn decode(value: PgValueRef<'row>) -> Result<Self, BoxDynError> {
                Ok(<$inner as Decode<'row, Postgres>>::decode(value)?.into())
            }
        }
    )*};
}

wrapped_column!(Uuid => ExportId, SourceId);
wrapped_column!(String => OrgId, Application, Resource);
