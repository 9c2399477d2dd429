mod catalog;
mod cli;
mod flight;
mod plans;
mod transport;
