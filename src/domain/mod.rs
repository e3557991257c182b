//! The pure domain: money, currencies, identifiers, metadata, pagination and the rules of each
//! resource. Nothing here touches a database or a transport; everything is unit-tested.

pub mod alert;
pub mod credit_application;
pub mod credit_balance_transaction;
pub mod credit_grant;
pub mod credit_hold;
pub mod currency;
pub mod customer;
pub mod customer_balance_transaction;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod metadata;
pub mod pagination;
pub mod tenant;
pub mod test_clock;
pub mod text;
pub mod webhook;

pub use currency::Currency;
pub use ids::{IdKind, new_id};
pub use metadata::{Metadata, MetadataUpdate};
pub use pagination::{Cursor, ListRequest, Page, TimeRange};
pub use tenant::Tenant;
