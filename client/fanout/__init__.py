X="client"
