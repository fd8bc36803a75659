//! Plugin administration (upload, list, attach, detach) and the module transfer between
//! brokers. The work lives in [`crate::plugins`]; these rows only adapt it to the table.

use quiver_wire::plugin::{
    PluginAttachRequest, PluginDeleteRequest, PluginDetachRequest, PluginListRequest,
    PluginModuleRequest, PluginUploadRequest,
};

use super::{Call, Outgoing, PeerProof, RequestError};

pub(super) async fn upload(
    req: PluginUploadRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("plugin `{}` ({} bytes)", req.name, req.module.len());
    call.audited(
        "plugin_upload",
        &what,
        crate::plugins::upload(req, &call.state.plugins).await,
    )
}

pub(super) async fn list(
    _req: PluginListRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    crate::plugins::list(&call.state.plugins)
}

pub(super) async fn attach(
    req: PluginAttachRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let a = &req.attachment;
    let what = format!(
        "plugin `{}` to topic `{}` at the {} stage, on error {}",
        a.plugin, a.topic, a.stage, a.on_error
    );
    call.audited(
        "plugin_attach",
        &what,
        crate::plugins::attach(req, &call.state.plugins).await,
    )
}

pub(super) async fn detach(
    req: PluginDetachRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("plugin `{}` from topic `{}`", req.plugin, req.topic);
    call.audited(
        "plugin_detach",
        &what,
        crate::plugins::detach(req, &call.state.plugins).await,
    )
}

pub(super) async fn delete(
    req: PluginDeleteRequest,
    call: &Call<'_>,
) -> Result<Outgoing, RequestError> {
    let what = format!("plugin `{}`", req.name);
    call.audited(
        "plugin_delete",
        &what,
        crate::plugins::delete(req, &call.state.plugins).await,
    )
}

/// Another broker fetching a module it was told to install.
pub(super) async fn module(
    req: PluginModuleRequest,
    call: &Call<'_>,
    _peer: PeerProof,
) -> Result<Outgoing, RequestError> {
    crate::plugins::module(req, &call.state.plugins)
}
