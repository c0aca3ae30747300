X="server"
