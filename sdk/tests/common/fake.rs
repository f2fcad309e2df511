//! Pieces for in-process fake servers: [`unused!`] implements the unary methods of a tonic
//! service trait that a test never calls, answering UNIMPLEMENTED, as an upstream server
//! without them does.

use std::future::Future;
use std::pin::Pin;

/// What `tonic::async_trait` makes of a unary method.
pub type Reply<'a, T> =
    Pin<Box<dyn Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'a>>;

/// Unary methods answering UNIMPLEMENTED, written in the form `tonic::async_trait` expands
/// methods to (the attribute does not see into macro calls).
#[allow(unused_macros)] // Test binaries without a fake server include this module too.
macro_rules! unused {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _: tonic::Request<$req>,
        ) -> $crate::common::fake::Reply<'async_trait, $resp>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(tonic::Status::unimplemented("fake")) })
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use unused;
