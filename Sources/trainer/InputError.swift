// How the trainer reports errors. ArgumentParser prints a `ValidationError` with the usage line, which fits a
// command-line mistake (a bad option value, thrown from `validate()`); every other error is printed as just
// `Error: <description>` with exit status 1. Problems with the data or files a command reads — a malformed line, a
// missing or inconsistent file — are thrown as `InputError` (or the modules' own errors), so no usage line follows.

/// A problem with a file or the data a command reads (not with the command line). `description` names the file
/// (and line, field or tensor) and says what is wrong.
struct InputError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
