mod catalog;
mod flight;
mod plans;
