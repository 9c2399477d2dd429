mod catalog;
mod plans;
