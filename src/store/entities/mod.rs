//! SeaORM entities, one per table. Columns hold plain SQL types; `store` converts rows to
//! domain types at its boundary.

pub mod account;
pub mod api_key;
pub mod billing_alert;
pub mod credit_application;
pub mod credit_balance_transaction;
pub mod credit_grant;
pub mod credit_hold;
pub mod customer;
pub mod customer_balance;
pub mod customer_balance_transaction;
pub mod event;
pub mod idempotency_record;
pub mod test_clock;
pub mod webhook_delivery;
pub mod webhook_endpoint;
