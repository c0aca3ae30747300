X="quota"
