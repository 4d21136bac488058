"""
SSH socket forwarding on twisted.conch, as gvproxy's C{-forward-sock} and
the API's C{ssh-tunnel://} unix forwards do it.

One SSH session (L{gvtwisted.services.ssh.client.SSHSession}) to the guest's
sshd, dialled through the virtual network, carries every forwarded connection
as a C{direct-streamlocal@openssh.com} channel
(L{gvtwisted.services.ssh.channel}) to a unix socket in the guest.
L{gvtwisted.services.ssh.forward} listens on the host's unix sockets.
"""
