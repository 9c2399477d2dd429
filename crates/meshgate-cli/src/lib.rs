//! meshgate-cli
