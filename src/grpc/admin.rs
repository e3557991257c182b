//! `creditd.v1.AdminService`.

use tonic::{Request, Response, Status};

use super::context;
use super::proto::{self, admin_service_server::AdminService};
use crate::service::Services;
use crate::service::audit::{AuditReport, Checked, Finding};

pub struct AdminApi {
    services: Services,
}

impl AdminApi {
    pub fn new(services: Services) -> Self {
        AdminApi { services }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    /// Audits the caller's account and mode only.
    #[tracing::instrument(skip_all, err)]
    async fn audit(
        &self,
        request: Request<proto::AuditRequest>,
    ) -> Result<Response<proto::AuditReport>, Status> {
        let ctx = context(&self.services, &request).await?;
        let report = self.services.audit(&ctx).await?;
        Ok(Response::new(report.into()))
    }
}

impl From<AuditReport> for proto::AuditReport {
    fn from(report: AuditReport) -> Self {
        proto::AuditReport {
            checked: Some(report.checked.into()),
            findings: report.findings.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Checked> for proto::AuditChecked {
    fn from(checked: Checked) -> Self {
        proto::AuditChecked {
            customer_balances: checked.customer_balances,
            customer_balance_transactions: checked.customer_balance_transactions,
            credit_grants: checked.credit_grants,
            credit_balance_transactions: checked.credit_balance_transactions,
            credit_applications: checked.credit_applications,
            credit_holds: checked.credit_holds,
        }
    }
}

impl From<Finding> for proto::AuditFinding {
    fn from(finding: Finding) -> Self {
        proto::AuditFinding {
            kind: finding.kind,
            object: finding.object,
            expected: finding.expected,
            actual: finding.actual,
            message: finding.message,
        }
    }
}
