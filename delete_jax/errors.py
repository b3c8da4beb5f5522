"""The one exception type for bad user input.

Anything a user can fix (unknown dataset, forget class out of range, missing
checkpoint, unreadable data dir, NaN loss) raises `UserError` with a single-line
message naming the problem and the fix; `main` prints it without a traceback.
"""


class UserError(ValueError):
  """Bad input from the user; the message says what is wrong and how to fix it."""
