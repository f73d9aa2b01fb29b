//! Who is calling: the identity that travels with every gRPC call (DESIGN.md §3
//! invariant 7), shared by the auth service, which issues it, and every service that
//! checks it.
//!
//! - [`permission`]: the permission catalog, the built-in roles and the roles held
//!   across the organisation (`docs/permissions.md`);
//! - [`Caller`]: the principal (a user or an API key), the team it acts in, the
//!   permissions it holds there and its organisation roles; [`Caller::require`]
//!   answers `PERMISSION_DENIED` through godel-error;
//! - [`token`]: the access token — claims, signing (auth) and verification;
//! - [`jwks`]: the key set auth publishes;
//! - [`CallerVerifier`]: verifies tokens against the cached key set, refetching it
//!   from auth on an unknown `kid`;
//! - [`metadata`]: the token in `authorization: Bearer …` metadata — reading it on a
//!   server ([`CallerLayer`], [`caller_from_request`]) and sending it from a client
//!   ([`attach_token`], [`BearerInterceptor`], [`forward_token`]).
//!
//! The signed metadata is a Godel access token: the gateway authenticates a request
//! (verifying a user's token, or exchanging an API key for a short-lived token with
//! auth's `Authenticate`) and forwards the token, so every service verifies exactly
//! one thing, locally.

pub mod caller;
pub mod jwks;
pub mod metadata;
pub mod permission;
pub mod token;
mod verifier;

pub use caller::{Caller, Principal, PrincipalKind};
pub use jwks::{Jwk, Jwks, PublicKey};
pub use metadata::{
    AUTHORIZATION, BearerInterceptor, CallerLayer, WithCaller, attach_token, bearer_token,
    caller_from_request, forward_token,
};
pub use permission::{BuiltinRole, OrgRole, Permission, PermissionSet, UnknownPermission};
pub use token::{AccessClaims, VerifyError};
pub use verifier::{
    AuthKeySource, CallerVerifier, IdentityConfig, KeySource, KeySourceError, VerifierConfig,
    jwk_from_pb, jwk_to_pb,
};
