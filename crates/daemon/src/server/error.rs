//! The one place where library errors become gRPC statuses. Messages name
//! the offending input; credentials never appear in them (the store's errors
//! are written that way).

use crius_image_store::pull::RegistryError;
use crius_image_store::registries::RegistriesError;
use crius_image_store::StoreError;
use tonic::Status;

pub fn image_error(e: StoreError) -> Status {
    let msg = e.to_string();
    match &e {
        StoreError::Reference(_) => Status::invalid_argument(msg),
        StoreError::Registries(r) => match r {
            RegistriesError::Blocked { .. } => Status::permission_denied(msg),
            RegistriesError::Ambiguous { .. } => Status::invalid_argument(msg),
            _ => Status::failed_precondition(msg),
        },
        StoreError::Registry { source, .. } => match source {
            RegistryError::Unauthorized { .. } => Status::unauthenticated(msg),
            RegistryError::Forbidden { .. } => Status::permission_denied(msg),
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => {
                Status::not_found(msg)
            }
            RegistryError::Unavailable { .. } => Status::unavailable(msg),
            RegistryError::Integrity(_) => Status::data_loss(msg),
            RegistryError::Protocol { .. } | RegistryError::Store(_) => Status::internal(msg),
        },
        StoreError::Unsupported { .. } => Status::failed_precondition(msg),
        // Content the registry served that crius refuses to unpack (escaping
        // paths, diff ID mismatch, oversized headers): the image is unusable.
        StoreError::Unpack { .. } | StoreError::InvalidDiffId { .. } => {
            Status::failed_precondition(msg)
        }
        StoreError::BackingOff { .. } => Status::unavailable(msg),
        StoreError::InUse { .. } => Status::failed_precondition(msg),
        StoreError::Layout(_) | StoreError::Db(_) | StoreError::Auth(_) => Status::internal(msg),
    }
}

/// A required request field that is missing or empty.
pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

/// Pod and container errors: the manager already sorted them by code.
pub fn manager_error(e: crate::manager::ManagerError) -> Status {
    use crate::manager::ManagerError as M;
    match e {
        M::InvalidArgument(m) => Status::invalid_argument(m),
        M::NotFound(m) => Status::not_found(m),
        M::AlreadyExists(m) => Status::already_exists(m),
        M::FailedPrecondition(m) => Status::failed_precondition(m),
        M::Unimplemented(m) => Status::unimplemented(m),
        M::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        M::Internal(m) => Status::internal(m),
    }
}
