//! etcd's `Auth` service. raftkv does not implement etcd's users, roles and permissions (its clients are
//! authenticated by mTLS, `--client-cert-auth`): AuthStatus says authentication is disabled, Authenticate answers
//! etcd's `authentication is not enabled`, and managing users or roles answers UNIMPLEMENTED.

use std::sync::Arc;

use raftkv_proto::etcd::{self as pb, auth_server::Auth};
use tonic::{Request, Response, Status};

use super::observed;
use crate::{
    api::ApiContext,
    error::{Error, EtcdError},
};

pub struct EtcdAuthService {
    ctx: Arc<ApiContext>,
}

impl EtcdAuthService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }
}

fn no_auth() -> Status {
    Status::unimplemented("raftkv does not implement etcd's users and roles; clients authenticate with mTLS")
}

#[tonic::async_trait]
impl Auth for EtcdAuthService {
    async fn auth_status(&self, _: Request<pb::AuthStatusRequest>) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let ctx = &self.ctx;
        observed(ctx, "etcd.AuthStatus", async {
            let revision = ctx.state_machine.applied().1;
            Ok(pb::AuthStatusResponse { header: Some(ctx.etcd_header(revision)), enabled: false, auth_revision: 0 })
        })
        .await
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Error::Etcd(EtcdError::AuthNotEnabled).into_etcd_status())
    }

    async fn auth_enable(&self, _: Request<pb::AuthEnableRequest>) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Err(no_auth())
    }

    async fn auth_disable(
        &self,
        _: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        Err(no_auth())
    }

    async fn user_add(&self, _: Request<pb::AuthUserAddRequest>) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        Err(no_auth())
    }

    async fn user_get(&self, _: Request<pb::AuthUserGetRequest>) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        Err(no_auth())
    }

    async fn user_list(
        &self,
        _: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        Err(no_auth())
    }

    async fn user_delete(
        &self,
        _: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        Err(no_auth())
    }

    async fn user_change_password(
        &self,
        _: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(no_auth())
    }

    async fn user_grant_role(
        &self,
        _: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        Err(no_auth())
    }

    async fn user_revoke_role(
        &self,
        _: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        Err(no_auth())
    }

    async fn role_add(&self, _: Request<pb::AuthRoleAddRequest>) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        Err(no_auth())
    }

    async fn role_get(&self, _: Request<pb::AuthRoleGetRequest>) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        Err(no_auth())
    }

    async fn role_list(
        &self,
        _: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        Err(no_auth())
    }

    async fn role_delete(
        &self,
        _: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        Err(no_auth())
    }

    async fn role_grant_permission(
        &self,
        _: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        Err(no_auth())
    }

    async fn role_revoke_permission(
        &self,
        _: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        Err(no_auth())
    }
}
