"""The training-data generators (generate_NatSR.py, generate_TrainNMD.py): build.py drives them."""
from natsr.process import exits


class DataError(exits.UsageError):
    """An error the user can fix (bad input, unwritable output); the message starts with the file or
    folder at fault."""
