console.log("listening on " + process.env.PORT);
