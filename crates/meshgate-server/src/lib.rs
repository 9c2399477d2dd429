//! meshgate-server
