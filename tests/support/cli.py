"""Running the command line in-process, as the CLI tests do."""
from onnxprune.cli import main


def call(capfd, args):
    """cli.main in-process; (exit code, stdout, stderr) captured at the file-descriptor level."""
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err
