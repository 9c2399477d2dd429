mod catalog;
mod checks;
mod cli;
mod flight;
mod plans;
mod publish;
mod transport;
