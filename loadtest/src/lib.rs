//! Load generator for dynakv (issue 5). Not implemented yet.
